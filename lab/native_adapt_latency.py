"""Adaptation latency, Python, 1 thread: adapt.pte's training path (runtime_py AdaptProgram: prepare + forward_backward
+ SGD per step) vs its stateless unrolled method (prepare + `adapt`, what runtime_native runs). p50 of 3,000 calls.

    .venv/bin/python lab/native_adapt_latency.py artifacts/bundle artifacts/keys/public.pem
"""
import json
import sys

import torch

from metarec.export.measure import _p50
from metarec.runtime.bundle import open_bundle
from metarec.runtime.programs import AdaptProgram


def main(bundle_dir, key):
    from executorch.runtime import Runtime

    torch.set_num_threads(1)
    b = open_bundle(bundle_dir, key)
    if "adapt" not in b.manifest.programs:
        raise SystemExit(f"{bundle_dir} has no adapt program (export found no step that pays): nothing to time")
    io, sh = b.manifest.programs["adapt"], b.manifest.shapes
    shapes = {"theta0": (sh.P,), "hist_vecs": (sh.L, sh.d), "hist_mask": (sh.L,), "scene": (sh.F,),
              "target_vecs": (sh.S, sh.d), "target_mask": (sh.S,), "neg_vecs": (sh.R, sh.d)}
    g = torch.Generator().manual_seed(0)
    args = [torch.rand(shapes[n], generator=g) for n in io.inputs]
    program = Runtime.get().load_program(b.programs["adapt"])
    prep, unrolled = program.load_method(io.prepare_method), program.load_method(io.unrolled_method)
    trainer = AdaptProgram(b.programs["adapt"], io, sh)
    named = {n: a.numpy() for n, a in zip(io.inputs, args)}
    print(json.dumps({"inner_steps": io.inner_steps, "P": sh.P,
                      "training_program_us": _p50(lambda: trainer.adapt(named), 3000),
                      "unrolled_method_us": _p50(lambda: unrolled.execute([prep.execute(args)[0]]), 3000)}))


if __name__ == "__main__":
    main(*sys.argv[1:3])
