"""Write a synthetic world the product never saw as a user's folder (events.csv + items.csv with genres), to run
the whole product on it through the CLI (`bash lab/product_chain.sh NAME FOLDER`): session 12's held-out check.

    python lab/world_folder.py OUT_DIR --seed 303 --set proto_strength=2.5 taste_strength=1.2 ...
"""
import argparse
import csv
from pathlib import Path

from metarec.sdk.synthetic import generate, world_config


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out"), ap.add_argument("--base", default="world-a"), ap.add_argument("--seed", type=int)
    ap.add_argument("--set", nargs="*", default=[], help="field=value overrides of the base world")
    a = ap.parse_args()
    kw = {k: float(v) if "." in v else int(v) for k, v in (s.split("=", 1) for s in a.set)}
    ds = generate(world_config(a.base, seed=a.seed, **kw))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "events.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user", "item", "timestamp"])
        for u, i, t in zip(ds.user_ids[ds.user], ds.item_ids[ds.item], ds.ts):
            w.writerow([u, i, int(t)])
    with open(out / "items.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["item", "title", "genres"])
        for j, iid in enumerate(ds.item_ids):
            genres = "|".join(ds.genre_names[g] for g in ds.item_genres[j].nonzero()[0]) or "(no genres listed)"
            w.writerow([iid, f"Item {iid}", genres])  # the generator gives no release year
    print(f"{out}: {len(ds.user):,} events, {len(ds.user_ids):,} users, {len(ds.item_ids):,} items")


if __name__ == "__main__":
    main()
