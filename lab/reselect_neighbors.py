"""Would the item-item term pay once the onboarding term is on? (session 18, issue 20)

Export chooses the item-item term (step 2b) before the onboarding term (2d). This re-runs steps 1-2d on a
checkpoint's validation run as export does, then measures the term's grid again with the chosen onboarding term
in the scorer (export/select.py `_choose_neighbors` over a scorer with it), and prints the best grid rows.

    python lab/reselect_neighbors.py CHECKPOINT
"""
import sys, torch, numpy as np
from metarec.export import select as S
from metarec.export.select_onboarding import choose_onboarding
from metarec.sdk.data import load_dataset
from metarec.sdk.protocol import EventLog
from metarec.sdk.train import TrainConfig
from metarec.sdk.floor import verdict

ck = torch.load(sys.argv[1], weights_only=False)
validation = ck["validation"]
say = print
tcfg = TrainConfig.from_dict(validation["train_config"])
ds = load_dataset(tcfg.dataset); log = EventLog(ds)
base = {k: np.asarray(v) for k, v in validation["baseline"].items()}
prior = S.ValidationPriors.from_checkpoint(validation, tcfg, ds)
users = prior.judged
full = S._evaluate(prior, tcfg, ds, users, log)
if prior.cfg.inner_steps:
    skip = S._evaluate(prior.map(lambda m: S._with_steps(m, 0)), tcfg, ds, users, log)
    p = S._paired(full, skip)
    if verdict(p["ci"]) != "above":
        prior, full = prior.map(lambda m: S._with_steps(m, 0)), skip
rep, prior, full = S._choose_popularity(prior, tcfg, ds, users, log, full, None, say)
memo = S._Memo(S._recommender(prior, tcfg))
r_nb, nb, best_nb = S._choose_neighbors(memo, ds, users, log, full, 0.02, say)
r_bh, bh, nb = S._choose_by_history(prior, memo, best_nb, nb, ds, users, log, say)
r_ob, ob = choose_onboarding(S._recommender(prior, tcfg, nb=nb, bh=bh), ds, users, log, S._paired, say, floor=base)
print("--- re-measured with the onboarding term on (and no item-item term)")
full2 = S._evaluate(prior, tcfg, ds, users, log, ob=ob)
memo2 = S._Memo(S._recommender(prior, tcfg, ob=ob))
r2, nb2, best2 = S._choose_neighbors(memo2, ds, users, log, full2, 0.02, say)
print("headline with ob:", S._hr(full2, S.HEADLINE_KS), "base", S._hr(base, S.HEADLINE_KS))
if best2 is not None:
    full3 = S._evaluate(prior, tcfg, ds, users, log, nb=best2, ob=ob)
    print("best2 headline:", S._hr(full3, S.HEADLINE_KS), S._paired(full3, full2, S.HEADLINE_KS), "vs base", S._paired(full3, base, S.HEADLINE_KS))
rows = sorted(r2["grid"], key=lambda g: -g["hr10"])[:6]
for g in rows: print(g)
