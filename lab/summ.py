"""Table rows of headline_val.md / adaptation_val.md from coldstart --partial-out files (usage: summ.py RUN.json ...)."""
import json, sys
for f in sys.argv[1:]:
    d = json.load(open(f))
    for name, v in d["ablations"].items():
        S = v["seeds"]; ks = sorted(S)
        def cell(get):
            xs = [get(S[k]) for k in ks]
            return f"{sum(xs)/len(xs):.3f} ({' / '.join(f'{x:.3f}' for x in xs)})"
        hr = cell(lambda r: r["headline"]["hr10"]); nd = cell(lambda r: r["headline"]["ndcg10"])
        r3 = cell(lambda r: r["learning_curve"]["recall10"]["3"]["recall10"])
        r5 = cell(lambda r: r["learning_curve"]["recall10"]["5"]["recall10"])
        r10 = cell(lambda r: r["learning_curve"]["recall10"]["10"]["recall10"])
        k0 = cell(lambda r: r["per_k"]["0"]["hr10"])
        ts = [t for k in ks for t in S[k]["train_seconds"]]
        print(f"| {name} | {hr} | {nd} | {r3} | {r5} | {r10} | {k0} | {sum(ts)/len(ts):.0f} | {f.split('/')[-1][:-5]} |")
