"""Catalog deltas: items added to (or retired from) a bundle's catalog without a new bundle.

The server makes a delta with `metarec catalog add BUNDLE ITEMS.csv` (export/catalog.py, the one writer) or
`metarec catalog retire`; the app calls `Recommender.add_items(path)`. A delta is one signed file (`<delta>` +
`<delta>.sig`, Ed25519 with the bundle's key, like a trending pack); its bytes are bundle_codecs.py's
`encode_delta`. It is bound to one bundle: its `bundle_serial` and `catalog` (catalog_digest of the bundle's
ids) must be the open bundle's, and deltas apply in `seq` order 1, 2, 3, ... per bundle serial, each exactly once
(a replayed or skipped seq is refused). A delta that adds items carries their table rows (the bundle's table
layout) and a small score program over them (the kernel's score for id-less items, built from the same model as
the bundle's score.pte), so the phone scores new items with the server's math and runs no training code.

This module reads and checks a delta on its own (`CatalogDelta`) and loads its program (`DeltaScorer`);
catalog_state.py checks it against the open bundle and its earlier deltas, persists it in the state database and
re-verifies every stored delta on open.

    python -m metarec.runtime.catalog D < delta.bytes   # smoke run of an unsigned delta's program (d = item dim)
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

from .bundle_codecs import decode_delta, verify_signature
from .table_codec import decode_table
from .errors import BundleError, MetaRecRuntimeError
from .manifest import DELTA_INPUTS, DELTA_METHOD, DELTA_OUTPUTS, Shapes
from .programs import _FLOAT, _check_inputs
from .quiet import first_program_load, quiet_imports
from .trending import _read_bounded

MAX_DELTA_FILE = 64 << 20


@dataclasses.dataclass(frozen=True)
class CatalogDelta:
    """A verified delta's fields (`raw` and `sig` are what the state database keeps and re-verifies)."""

    bundle_serial: int
    catalog: str
    seq: int
    at: float
    items: tuple[str, ...]
    retire: tuple[str, ...]
    table_bytes: bytes | None
    table_format: str
    group_size: int
    scale_dtype: str
    program: bytes | None  # inflated ExecuTorch bytes
    raw: bytes
    sig: bytes

    @classmethod
    def load(cls, path: str | Path, trusted_key) -> "CatalogDelta":
        """Read `path` and `<path>.sig` (bounded) and verify; `BundleError` if missing, unsigned, forged or malformed."""
        try:
            data = _read_bounded(Path(path), MAX_DELTA_FILE)
            sig = _read_bounded(Path(f"{path}.sig"), 1024)
        except OSError as e:
            raise BundleError(f"cannot read catalog delta {path}: {e}") from e
        return cls.from_signed(data, sig, trusted_key)

    @classmethod
    def from_signed(cls, data: bytes, sig: bytes, trusted_key) -> "CatalogDelta":
        verify_signature(data, sig, trusted_key)
        return cls.decode(data, sig)

    @classmethod
    def decode(cls, data: bytes, sig: bytes = b"") -> "CatalogDelta":
        """Parse without verifying (the signer's smoke run; everything else goes through `from_signed`)."""
        try:
            d = decode_delta(data)
        except (UnicodeDecodeError, ValueError, TypeError) as e:
            raise BundleError(f"invalid catalog delta: {e}") from e
        return cls(bundle_serial=d["bundle_serial"], catalog=d["catalog"], seq=d["seq"], at=float(d["at"]),
                   items=tuple(d["items"]), retire=tuple(d["retire"]), table_bytes=d["table"],
                   table_format=d.get("table_format", ""), group_size=d.get("group_size", 0),
                   scale_dtype=d.get("scale_dtype", "float32"), program=d["program"],
                   raw=data, sig=sig)

    def table(self, d: int) -> np.ndarray:
        """The new items' (n, d) float32 rows, decoded like the bundle's table; `BundleError` if they do not fit."""
        if self.table_bytes is None:
            return np.zeros((0, d), np.float32)
        return decode_table(self.table_bytes, len(self.items), d, self.table_format, self.group_size,
                            self.scale_dtype)


class DeltaScorer:
    """A delta's score program: DELTA_INPUTS (head, history, scene, and the delta's own trend, exclude and table)
    -> every new item's score (n,). Loaded, shape-checked against the bundle and run once on zeros here, so a delta
    whose program does not fit is refused before anything is stored."""

    def __init__(self, program: bytes, shapes: Shapes, n: int):
        with quiet_imports():
            from executorch.runtime import Runtime
        try:
            with first_program_load():
                prog = Runtime.get().load_program(program)
                if DELTA_METHOD not in prog.method_names:
                    raise BundleError(f"catalog delta program has no method {DELTA_METHOD!r}")
                meta = prog.metadata(DELTA_METHOD)
                self._method = prog.load_method(DELTA_METHOD)
        except BundleError:
            raise
        except Exception as e:
            raise BundleError(f"catalog delta program cannot be loaded: {e}") from e
        self._program = prog  # keep alive: the method refers to it
        self.n = n
        expected = {"head": (shapes.P,), "hist_vecs": (shapes.L, shapes.d), "hist_mask": (shapes.L,),
                    "scene": (shapes.F,), "trend": (n,), "exclude": (n,), "table": (n, shapes.d)}
        _check_inputs("catalog delta", meta, DELTA_INPUTS, expected)
        if meta.num_outputs() != len(DELTA_OUTPUTS):
            raise BundleError(f"catalog delta program returns {meta.num_outputs()} outputs, expected "
                              f"{len(DELTA_OUTPUTS)}")
        out = meta.output_tensor_meta(0)
        if tuple(out.sizes()) != (n,) or out.dtype() != _FLOAT:
            raise BundleError(f"catalog delta program's scores are {tuple(out.sizes())}, expected ({n},) f32")
        zeros = {k: torch.zeros(v) for k, v in expected.items()}
        scores = self.run([zeros[k] for k in DELTA_INPUTS])
        if scores.shape != (n,) or not np.all(np.isfinite(scores)):
            raise BundleError("catalog delta program does not score its items on zero inputs")

    def run(self, inputs: list) -> np.ndarray:
        """Scores (n,) float32 (a copy) from tensors in DELTA_INPUTS order."""
        try:
            out = self._method.execute(inputs)
        except Exception as e:
            raise BundleError(f"catalog delta program failed: {e}") from e
        return out[0].numpy().astype(np.float32).reshape(-1)  # a copy: the output memory is reused


def smoke_run(data: bytes, d: int) -> None:
    """Decode an unsigned delta and run its program once (what the signer does in a child before signing)."""
    delta = CatalogDelta.decode(data)
    if delta.program is None:
        return
    delta.table(d)
    from types import SimpleNamespace

    dims = [_program_dim(delta.program, DELTA_INPUTS.index(k)) for k in ("head", "hist_vecs", "scene")]
    DeltaScorer(delta.program, SimpleNamespace(P=dims[0], L=dims[1], d=d, F=dims[2]), len(delta.items))


def _program_dim(program: bytes, i: int) -> int:
    """Input `i`'s first size as the program declares it (the smoke run checks the rest against it)."""
    with quiet_imports():
        from executorch.runtime import Runtime
    return int(Runtime.get().load_program(program).metadata(DELTA_METHOD).input_tensor_meta(i).sizes()[0])


def main(argv: list[str]) -> int:
    try:
        smoke_run(sys.stdin.buffer.read(), int(argv[0]))
    except MetaRecRuntimeError as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 3
    return 0


def probe_in_child(data: bytes, d: int, timeout: float = 600.0) -> None:
    """`smoke_run` in a fresh interpreter (runtime_py/probe.py's reason: a fault inside ExecuTorch kills the child,
    not the signer); `BundleError` naming the refusal or the signal."""
    import signal
    import subprocess

    try:
        r = subprocess.run([sys.executable, "-m", "metarec.runtime.catalog", str(int(d))], input=data,
                           capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise BundleError(f"catalog delta smoke run did not finish within {timeout:.0f} s") from e
    if r.returncode < 0:
        raise BundleError(f"catalog delta smoke run was killed by {signal.Signals(-r.returncode).name}")
    if r.returncode:
        tail = r.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["(no message)"]
        raise BundleError(f"catalog delta smoke run failed (exit {r.returncode}): {tail[0]}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
