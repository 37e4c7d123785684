"""Shared by lab/zblend.py and lab/onboarding_form.py: a checkpoint's validation and shipped priors, its dataset, and
the scorer its bundle's manifest says the phone serves without the onboarding term (pop delta, steps, item-item term,
weights by history length). Session 14, issue 20."""
import json
import types

import torch

from metarec.export.select import _recommender, _with_steps, with_pop_delta
from metarec.runtime.manifest import OnboardingSpec
from metarec.sdk.data import load_dataset
from metarec.sdk.neighbors import LiveNeighbors
from metarec.sdk.protocol import EventLog, split_users
from metarec.sdk.train import TrainConfig, load_checkpoint, model_from_state


def load(ck_path: str, man_path: str):
    ck = torch.load(ck_path, weights_only=False)
    man = json.load(open(man_path))
    model, cfg, _ = load_checkpoint(ck_path)
    v = ck['validation']
    vcfg = TrainConfig.from_dict(v['train_config'])
    ds = load_dataset(cfg.dataset)
    return types.SimpleNamespace(
        ck=ck, man=man, model=model, cfg=cfg, v=v, vcfg=vcfg,
        vprior=model_from_state(vcfg, int(v['n_items']), v['state_dict']), ds=ds, sp=split_users(ds),
        log=EventLog(ds), spec=OnboardingSpec(weight=(1.0,), span=3, window_days=7.0),
        delta=float(man['configs']['selection'].get('popularity', {}).get('delta', 0.0) or 0.0),
        steps=int(man['configs']['model']['inner_steps']))


def scorer(c, prior, tcfg):
    """The eager scorer of `prior` served as the bundle's manifest says, without the onboarding term."""
    prior = _with_steps(with_pop_delta(prior, c.delta) if c.delta else prior, c.steps)
    nbm, bhm = c.man.get('neighbors'), c.man.get('by_history')
    nb = (LiveNeighbors(nbm['kind'], nbm['m']), nbm['last'], nbm['decay'], nbm['weight']) if nbm else None
    bh = {"term": bhm["term"], "popularity": bhm["popularity"]} if bhm else None
    return _recommender(prior, tcfg, nb=nb, bh=bh)
