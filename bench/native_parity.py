"""Native vs Python runtime on PROTOCOL v1 test users: the same queries through both (bench/runtime_eval.py's
driver), top-10 compared in order per (user, K).

    .venv/bin/python -m metarec.bench.native_parity --bundle artifacts/bundle --key artifacts/keys/public.pem
prints one JSON line: queries, share equal in order (overall and per K), HR@10 both ways.
"""
from __future__ import annotations

import argparse
import json

from metarec.runtime.native import NativeRecommender
from metarec.sdk.data import load_dataset

from .runtime_eval import runtime_next_item

KS = (0, 1, 2, 3, 5, 10)


def native_parity(bundle_dir, key, dataset: str = "ml-100k", users=None, ks=KS, progress: bool = False) -> dict:
    ds = load_dataset(dataset)
    py = runtime_next_item(bundle_dir, key, ds, users=users, ks=ks, progress=progress)
    nat = runtime_next_item(bundle_dir, key, ds, users=users, ks=ks, progress=progress, opener=NativeRecommender.open)
    keys = sorted(py["top10"])
    same = [py["top10"][q] == nat["top10"].get(q) for q in keys]
    by_k = {str(k): sum(s for q, s in zip(keys, same) if q[1] == k) / max(1, sum(q[1] == k for q in keys)) for k in ks}
    return {"queries": len(keys), "users": len({q[0] for q in keys}), "equal_in_order": sum(same) / len(keys),
            "by_k": by_k, "hr10_python_k1to3": py["headline"]["hr10"], "hr10_native_k1to3": nat["headline"]["hr10"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", default="artifacts/bundle")
    p.add_argument("--key", default="artifacts/keys/public.pem")
    p.add_argument("--dataset", default="ml-100k")
    a = p.parse_args(argv)
    print(json.dumps(native_parity(a.bundle, a.key, a.dataset)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
