"""Is the additive onboarding term on the prior's raw scores the wrong form? The shipped scorer (a checkpoint's
prior served as its bundle says: pop delta, steps, item-item term, weights by length) against z-scored blends with
the onboarding count and transition3, weights picked on validation users (K = 1..3), read on test users (K = 1..3,
paired against transition3+onboarding picked the same way). Session 14, issue 20.

    python lab/zblend.py CHECKPOINT BUNDLE/manifest.json OUT.json
"""
import sys, json, itertools, numpy as np
from metarec.sdk.protocol import next_item_queries, rank_metrics
from metarec.sdk.baselines import Transition, zscore
from metarec.sdk.onboarding import onboarding_feature
from metarec.sdk.coldstart_diagnostics import paired_difference
from _shipped_scorer import load, scorer

ck_path, man_path, out = sys.argv[1:4]
c = load(ck_path, man_path)
model, cfg, vprior, vcfg, ds, sp, log, spec = c.model, c.cfg, c.vprior, c.vcfg, c.ds, c.sp, c.log, c.spec
print('pop delta', c.delta, 'steps', c.steps, flush=True)
t3 = Transition(last=3).fit(ds, sp.train, log)

def rows(prior, tcfg, users, ks=(1, 2, 3)):
    rec = scorer(c, prior, tcfg)
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
