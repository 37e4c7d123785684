"""The two ExecuTorch programs of a bundle, loaded from verified bytes and checked against the manifest's I/O.

score.pte is an inference program run through `executorch.runtime`; adapt.pte is a training program run through
`executorch.extension.training` (forward_backward + its SGD optimizer). torch appears here only as the tensor
type ExecuTorch takes and returns (torch.from_numpy views, no copies); no torch training API is used.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from .errors import BundleError
from .manifest import ProgramIO, Shapes

_FLOAT, _LONG = 6, 4  # ExecuTorch ScalarType codes, as MethodMeta reports them


def _score_shapes(sh: Shapes) -> dict[str, tuple]:
    return {"head": (sh.P,), "hist_vecs": (sh.L, sh.d), "hist_mask": (sh.L,), "scene": (sh.F,),
            "trend": (sh.N,), "exclude": (sh.N,), "table": (sh.N, sh.d)}


def _adapt_shapes(sh: Shapes) -> dict[str, tuple]:
    return {"theta0": (sh.P,), "hist_vecs": (sh.L, sh.d), "hist_mask": (sh.L,), "scene": (sh.F,),
            "target_vecs": (sh.S, sh.d), "target_mask": (sh.S,), "neg_vecs": (sh.R, sh.d)}


class ScoreProgram:
    """score.pte: (head, hist_vecs, hist_mask, scene, trend, exclude) -> (topk_scores, topk_ids), in the
    manifest's input order."""

    def __init__(self, data: bytes, io: ProgramIO, shapes: Shapes):
        from executorch.runtime import Runtime  # imported here: loading it is slow and only needed with a bundle

        try:
            program = Runtime.get().load_program(data)
            if io.method not in program.method_names:
                raise BundleError(f"score program has no method {io.method!r} (has {sorted(program.method_names)})")
            meta = program.metadata(io.method)
            self._method = program.load_method(io.method)
        except BundleError:
            raise
        except Exception as e:  # the pybinding raises RuntimeError/ValueError for malformed programs
            raise BundleError(f"score program cannot be loaded: {e}") from e
        self._program = program  # keep alive: the method refers to it
        expected = _score_shapes(shapes)
        if meta.num_inputs() != len(io.inputs):
            raise BundleError(f"score program takes {meta.num_inputs()} inputs, manifest lists {len(io.inputs)}")
        for i, name in enumerate(io.inputs):
            tm = meta.input_tensor_meta(i)
            if tuple(tm.sizes()) != expected[name] or tm.dtype() != _FLOAT:
                raise BundleError(f"score input {i} ({name}) is {tuple(tm.sizes())}, expected {expected[name]} f32")
        self.order = io.inputs
        self.i_scores = io.outputs.index("topk_scores")
        self.i_ids = io.outputs.index("topk_ids")
        if tuple(meta.output_tensor_meta(self.i_ids).sizes()) != (shapes.k_max,):
            raise BundleError(f"score program's top-k size differs from k_max={shapes.k_max}")

    def execute(self, inputs: list) -> tuple[torch.Tensor, torch.Tensor]:
        """Run on tensors already in `self.order`; returns (scores, ids), best first."""
        out = self._method.execute(inputs)
        return out[self.i_scores], out[self.i_ids]


class AdaptProgram:
    """adapt.pte: `inner_steps` Meta-SGD steps by forward_backward + SGD(lr) on the program's `delta`.

    The program's parameter memory is shared by all users, so each adaptation first zeroes delta; per-user heads
    live in the store, not in the program.
    """

    def __init__(self, data: bytes, io: ProgramIO, shapes: Shapes):
        try:
            with warnings.catch_warnings():  # the training API is marked experimental; say so once, here
                warnings.simplefilter("ignore")
                from executorch.extension.training import (_load_for_executorch_for_training_from_buffer,
                                                           get_sgd_optimizer)
                self._module = _load_for_executorch_for_training_from_buffer(data)
        except Exception as e:
            raise BundleError(f"adapt program cannot be loaded: {e}") from e
        self.io = io
        self.shapes = shapes
        self._expected = _adapt_shapes(shapes)
        self.i_loss = io.outputs.index("loss")
        self.i_scale = io.outputs.index("scale")
        # named_parameters() exists only after a first forward_backward: run one on zeros to reach delta.
        zeros = {n: np.zeros(s, dtype=np.float32) for n, s in self._expected.items()}
        try:
            self._module.forward_backward(io.method, [torch.from_numpy(zeros[n]) for n in io.inputs])
            params = self._module.named_parameters()
            if list(params) != list(io.parameters):
                raise BundleError(f"adapt program parameters {list(params)} != manifest {list(io.parameters)}")
            self._delta = params[io.parameters[0]]
            if tuple(self._delta.shape) != (shapes.P,):
                raise BundleError(f"adapt parameter is {tuple(self._delta.shape)}, expected ({shapes.P},)")
            self._optimizer = get_sgd_optimizer(params, float(io.lr), 0, 0, 0, False)
        except BundleError:
            raise
        except Exception as e:
            raise BundleError(f"adapt program does not run on contract-shaped inputs: {e}") from e

    def adapt(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """Adapted head (P,) float32 from contract inputs by name (theta0, hist_vecs, ...)."""
        theta0 = inputs["theta0"]
        if self.io.inner_steps == 0:
            return theta0.copy()
        args = [torch.from_numpy(np.array(inputs[n], dtype=np.float32)) for n in self.io.inputs]  # writable copies
        self._delta.zero_()
        for _ in range(self.io.inner_steps):
            out = self._module.forward_backward(self.io.method, args)
            self._optimizer.step(self._module.named_gradients())
        scale = out[self.i_scale].detach().numpy().astype(np.float32, copy=False)
        head = theta0 + scale * self._delta.detach().numpy()
        return head.astype(np.float32)
