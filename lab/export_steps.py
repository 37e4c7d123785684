"""Export's choices 1-2d (export/select.py) re-run on a checkpoint's validation run, for the lab's probes of what
export would choose with something more (lab/reselect_neighbors.py, lab/gap_weights.py).

    from export_steps import export_steps
    st = export_steps(CHECKPOINT)   # st.prior, st.full, st.nb, st.best_nb, st.bh, st.ob, st.base, ...
"""
from types import SimpleNamespace

import numpy as np
import torch
from metarec.export import select as S
from metarec.export.select_onboarding import choose_onboarding
from metarec.sdk.data import load_dataset
from metarec.sdk.floor import verdict
from metarec.sdk.protocol import EventLog
from metarec.sdk.train import TrainConfig


def export_steps(checkpoint, say=print, budget: float = 0.02) -> SimpleNamespace:
    """Steps 1 (steps kept?), 2 (popularity), 2b (item-item term), 2c (by history length), 2d (onboarding)."""
    validation = torch.load(checkpoint, weights_only=False)["validation"]
    tcfg = TrainConfig.from_dict(validation["train_config"])
    ds = load_dataset(tcfg.dataset)
    log = EventLog(ds)
    base = {k: np.asarray(v) for k, v in validation["baseline"].items()}
    prior = S.ValidationPriors.from_checkpoint(validation, tcfg, ds)
    users = prior.judged
    full = S._evaluate(prior, tcfg, ds, users, log)
    if prior.cfg.inner_steps:
        skip = S._evaluate(prior.map(lambda m: S._with_steps(m, 0)), tcfg, ds, users, log)
        if verdict(S._paired(full, skip)["ci"]) != "above":
            prior, full = prior.map(lambda m: S._with_steps(m, 0)), skip
    _, prior, full = S._choose_popularity(prior, tcfg, ds, users, log, full, None, say)
    memo = S._Memo(S._recommender(prior, tcfg))
    _, nb, best_nb = S._choose_neighbors(memo, ds, users, log, full, budget, say)
    _, bh, nb = S._choose_by_history(prior, memo, best_nb, nb, ds, users, log, say)
    _, ob = choose_onboarding(S._recommender(prior, tcfg, nb=nb, bh=bh), ds, users, log, S._paired, say, floor=base)
    return SimpleNamespace(tcfg=tcfg, ds=ds, log=log, base=base, prior=prior, users=users, full=full, nb=nb,
                           best_nb=best_nb, bh=bh, ob=ob)
