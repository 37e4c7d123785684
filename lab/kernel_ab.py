"""A/B of the phone's programs before and after the scoring-kernel redesign (issue 15), interleaved in one process.

Question: do score.pte and adapt.pte built on sdk/kernel.py run as fast as the hand-written programs they replace?
The old builder is export/programs.py at commit a96391e (read with `git show`); both lower the same random d=16,
M=4 model on ML-100K's shape. Rounds alternate old/new so machine load hits both alike.

    python lab/kernel_ab.py [--rounds 10] [--calls 2000]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import torch


def _old_programs():
    src = subprocess.run(["git", "show", "a96391e:export/programs.py"], capture_output=True, text=True, check=True).stdout
    path = tempfile.NamedTemporaryFile("w", suffix=".py", delete=False)
    path.write(src)
    path.close()
    spec = importlib.util.spec_from_file_location("old_programs", path.name)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _p50(fn, calls: int) -> float:
    ts = np.empty(calls)
    for j in range(calls):
        t = time.perf_counter_ns()
        fn()
        ts[j] = time.perf_counter_ns() - t
    return float(np.median(ts) / 1e3)


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--calls", type=int, default=2000)
    a = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    from executorch.extension.pybindings import portable_lib
    from executorch.extension.training import _load_for_executorch_for_training_from_buffer
    from executorch.runtime import Runtime

    import metarec.export.programs as new
    from metarec.sdk.model import MetaRecModel, ModelConfig

    portable_lib._unsafe_reset_threadpool(1)
    old = _old_programs()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    m = MetaRecModel(ModelConfig(dim=16, n_prototypes=4), 1682, (rng.random((1682, 21)) < 0.1).astype(np.float32))
    m.eval()
    with torch.no_grad():
        m.item_emb.normal_(0, 0.1)
    t = m.export_item_table()
    calls, keep = {}, []  # the runtime reads a program's constants from its bytes: keep them alive
    for name, mod in (("old", old), ("new", new)):
        score_bytes = mod.export_score_program(m, m.export_item_bias(), t, 20, torch.float16, True)
        score = Runtime.get().load_program(score_bytes)
        fwd = score.load_method("forward")
        ex = list(mod.score_example_inputs(m, t))
        adapt_bytes = mod.export_adapt_program(m, t)
        tm = _load_for_executorch_for_training_from_buffer(adapt_bytes)
        adapt_prog = Runtime.get().load_program(adapt_bytes)
        prep = adapt_prog.load_method("prepare")
        keep += [score_bytes, adapt_bytes, score, adapt_prog]
        aex = list(mod.adapt_example_inputs(m, t))
        packed = prep.execute(aex)[0].clone()
        calls[name] = {"score forward": (score, lambda f=fwd, x=ex: f.execute(x)),
                       "adapt prepare": (prep, lambda f=prep, x=aex: f.execute(x)),
                       "adapt step (forward_backward)": (tm, lambda f=tm, x=[packed]: f.forward_backward("forward", x))}
    res = {k: {"old": [], "new": []} for k in calls["old"]}
    for _ in range(a.rounds):
        for name in ("old", "new"):
            for k, (_, fn) in calls[name].items():
                for _ in range(100):
                    fn()
                res[k][name].append(_p50(fn, a.calls))
    out = {k: {"old_p50_us": float(np.median(v["old"])), "new_p50_us": float(np.median(v["new"])),
               "new/old": float(np.median(np.array(v["new"]) / np.array(v["old"])))} for k, v in res.items()}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
