"""The product chain's table (bench/results/selection/README.md) from `FP32=1 bash lab/product_chain.sh` outputs:
per run, the bundle's test HR@10 [CI], the best baseline, bundle minus it (paired), minus its fp32 prior, scene
retention (n of scene-changed queries) and the bundle's bytes.

    python lab/chain_table.py DIR NAME ...   (reads DIR/NAME.evb.json, DIR/NAME.fp32.json, and DIR/NAME.bundle/ if there)
"""
import json
import os
import sys


def ci(v):
    return f"[{v[0]:+.3f}, {v[1]:+.3f}]"


def main() -> None:
    d, names = sys.argv[1], sys.argv[2:]
    print("| run | test: bundle HR@10 [95% CI] | best baseline | bundle minus it, paired | minus its fp32 prior, paired"
          " | scene retention (changed n) | bundle bytes |")
    print("|---|---|---|---|---|---|---|")
    for n in names:
        e = json.load(open(os.path.join(d, f"{n}.evb.json")))
        f = json.load(open(os.path.join(d, f"{n}.fp32.json")))["fp32"]
        b, best = e["rows"]["bundle"], e["best_baseline"]
        r = e["rows"][best]
        sc = b["scene"]
        folder = os.path.join(d, f"{n}.bundle")  # not kept beside the results: "-" there
        size = f"{sum(os.path.getsize(os.path.join(folder, x)) for x in os.listdir(folder)):,}" if os.path.isdir(folder) else "-"
        print(f"| {n} | {b['hr10']:.3f} [{b['hr10_ci'][0]:.3f}, {b['hr10_ci'][1]:.3f}] | {best} {r['hr10']:.3f} | "
              f"{r['bundle_minus']:+.3f} {ci(r['bundle_minus_ci'])} {e['verdict']} | {f['bundle_minus']:+.3f} "
              f"{ci(f['bundle_minus_ci'])} ({100 * f['relative']:+.1f}%) | {sc['retention']:.3f} ({sc['changed']['n']}) | "
              f"{size} |")


if __name__ == "__main__":
    main()
