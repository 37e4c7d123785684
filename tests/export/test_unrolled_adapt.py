"""adapt.pte's stateless unrolled method (what runtime_native/ runs: no training extension) equals the training
program's steps as the Python runtime drives them (runtime_py/programs.py AdaptProgram)."""
import numpy as np
import pytest
import torch

from metarec.export.bundle import export_bundle
from metarec.export.config import ExportConfig
from metarec.export.programs import flatten_head
from metarec.runtime.bundle import open_bundle
from metarec.runtime.manifest import ADAPT_UNROLLED_METHOD
from metarec.runtime.programs import AdaptProgram


def run_unrolled(data: bytes, io, inputs: dict) -> np.ndarray:
    """prepare then the unrolled method through ExecuTorch's plain Module API (the native runtime's path)."""
    from executorch.runtime import Runtime

    program = Runtime.get().load_program(data)
    prep = program.load_method(io.prepare_method)
    packed = prep.execute([torch.as_tensor(inputs[n]) for n in io.inputs])[io.prepare_outputs.index("packed")]
    theta = program.load_method(io.unrolled_method).execute([packed])[0]
    out = theta.numpy().copy()
    del program, data
    return out


@pytest.mark.parametrize("steps", [1, 3])
def test_unrolled_theta_equals_training_runtime(tiny, keys, users, tmp_path, steps):
    model = tiny(dim=16, seed=2, inner_steps=steps)
    path = export_bundle(model, tmp_path / "b", quant="int8", prune="none", key_path=keys / "private.pem",
                         export_config=ExportConfig(k_max=20, onnx=False))
    b = open_bundle(path, keys / "public.pem")
    io = b.manifest.programs["adapt"]
    assert io.unrolled_method == ADAPT_UNROLLED_METHOD and io.inner_steps == steps
    trainer = AdaptProgram(b.programs["adapt"], io, b.manifest.shapes)
    table = torch.from_numpy(b.table.copy())
    neg = table[list(b.manifest.negatives)]
    theta0 = flatten_head(model, model.head_init()).detach()
    moved = 0.0
    for u in users(model, table, 6, seed=steps):
        inputs = {"theta0": theta0.numpy().copy(), "hist_vecs": u["hist_vecs"].numpy(),
                  "hist_mask": u["hist_mask"].numpy(), "scene": u["scene"].numpy(),
                  "target_vecs": u["hist_vecs"].numpy(), "target_mask": u["hist_mask"].numpy(),
                  "neg_vecs": neg.numpy()}
        want = trainer.adapt(inputs)
        got = run_unrolled(b.programs["adapt"], io, inputs)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        moved = max(moved, float(np.abs(want - theta0.numpy()).max()))
    assert moved > 1e-3  # the steps really moved the head, so equality is not the trivial theta0 == theta0
