"""Is the additive onboarding term on the prior's raw scores the wrong form? The shipped scorer (a checkpoint's
prior served as its bundle says: pop delta, steps, item-item term, weights by length) against z-scored blends with
the onboarding count and transition3, weights picked on validation users (K = 1..3), read on test users (K = 1..3,
paired against transition3+onboarding picked the same way). Session 14, issue 20.

    python lab/zblend.py CHECKPOINT BUNDLE/manifest.json OUT.json
"""
import sys, json, itertools, numpy as np, torch
from metarec.sdk.data import load_dataset
from metarec.sdk.protocol import EventLog, split_users, next_item_queries, rank_metrics
from metarec.sdk.train import load_checkpoint, model_from_state, TrainConfig
from metarec.sdk.neighbors import LiveNeighbors
from metarec.sdk.baselines import Transition, zscore
from metarec.sdk.onboarding import onboarding_feature
from metarec.sdk.coldstart_diagnostics import paired_difference
from metarec.runtime.manifest import OnboardingSpec
from metarec.export.select import _recommender, _with_steps, with_pop_delta

ck_path, man_path, out = sys.argv[1:4]
ck = torch.load(ck_path, weights_only=False)
man = json.load(open(man_path)); sel = man['configs']['selection']
nbm, bhm = man.get('neighbors'), man.get('by_history')
model, cfg, _ = load_checkpoint(ck_path)
v = ck['validation']; vcfg = TrainConfig.from_dict(v['train_config'])
vprior = model_from_state(vcfg, int(v['n_items']), v['state_dict'])
ds = load_dataset(cfg.dataset); sp = split_users(ds); log = EventLog(ds)
spec = OnboardingSpec(weight=(1.0,), span=3, window_days=7.0)
delta = float(sel.get('popularity', {}).get('delta', 0.0) or 0.0)
steps = int(man['configs']['model']['inner_steps'])
print('pop delta', delta, 'steps', steps, flush=True)
t3 = Transition(last=3).fit(ds, sp.train, log)


def rows(prior, tcfg, users, ks=(1, 2, 3)):
    prior = _with_steps(with_pop_delta(prior, delta) if delta else prior, steps)
    nb = (LiveNeighbors(nbm['kind'], nbm['m']), nbm['last'], nbm['decay'], nbm['weight']) if nbm else None
    bh = {"term": bhm["term"], "popularity": bhm["popularity"]} if bhm else None
    rec = _recommender(prior, tcfg, nb=nb, bh=bh)
    R = []
    for u, k, q, target in next_item_queries(ds, log, users, ks):
        if target in set(q.support_items.tolist()):
            continue
        s = rec.score(q); f = onboarding_feature(log, q.t, q.user, k, spec)
        R.append((u, k, np.stack([s, zscore(s), zscore(f), zscore(t3.score(q)), f]), target, q.support_items))
    return R


def ev(R, coef):  # coef over the 5 rows
    c = np.asarray(coef, float)
    hr = np.array([rank_metrics(c @ X, t, sup)[0] for u, k, X, t, sup in R])
    return {'user': np.array([r[0] for r in R]), 'k': np.array([r[1] for r in R]), 'hr': hr}


W = (0, 0.125, 0.25, 0.5, 1, 2, 4, 8)
A = (0, .1, .2, .3, .4, .5, .6, .7, .8, .9, 1.0)
forms = {
    'raw+w*f': [[1, 0, 0, 0, w] for w in W],
    'z(s)+w*z(f)': [[0, 1, w, 0, 0] for w in W],
    'z(s)+a*z(t3)+b*z(f)': [[0, 1, b, a, 0] for a, b in itertools.product(W, W)],
    't3+onb': [[0, 0, a, 1 - a, 0] for a in A],
}
V = rows(vprior, vcfg, sp.val)
T = rows(model, cfg, sp.test)
res = {}
for name, grid in forms.items():
    vals = [ev(V, c)['hr'].mean() for c in grid]
    best = grid[int(np.argmax(vals))]
    res[name] = {'coef': best, 'val': float(max(vals)), 'test_res': ev(T, best)}
    print(name, best, 'val', round(max(vals), 4), 'test', round(res[name]['test_res']['hr'].mean(), 4), flush=True)
ref = res['t3+onb']['test_res']
summary = {}
for name, r in res.items():
    p = paired_difference(r['test_res'], ref)
    summary[name] = {'coef': r['coef'], 'val_hr10': r['val'], 'test_hr10': float(r['test_res']['hr'].mean()),
                     'minus_t3onb': p['hr10_diff'], 'ci': p['hr10_diff_ci']}
    print(name, 'test minus t3+onb', round(p['hr10_diff'], 4), [round(x, 4) for x in p['hr10_diff_ci']])
json.dump(summary, open(out, 'w'), indent=1)
