"""Adaptation latency, Python, 1 thread: adapt.pte's training path (runtime_py AdaptProgram: prepare + forward_backward
+ SGD per step) vs its stateless unrolled method (prepare + `adapt`, what runtime_native runs). p50 of 3,000 calls.

    .venv/bin/python lab/native_adapt_latency.py artifacts/bundle artifacts/keys/public.pem
"""
import json
import sys
import time

import numpy as np
import torch

from metarec.runtime.bundle import open_bundle
from metarec.runtime.programs import AdaptProgram


def p50_us(f, n=3000):
    for _ in range(200):
        f()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts) * 1e6)


def main(bundle_dir, key):
    from executorch.runtime import Runtime

    torch.set_num_threads(1)
    b = open_bundle(bundle_dir, key)
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
                      "training_program_us": p50_us(lambda: trainer.adapt(named)),
                      "unrolled_method_us": p50_us(lambda: unrolled.execute([prep.execute(args)[0]]))}))


if __name__ == "__main__":
    main(*sys.argv[1:3])
