"""The onboarding term's form: w * log1p(count) on the prior's raw scores (session 13) against the same term scaled
by std(scores) / std(log1p(count)) of the query (a z-scored blend, as the baselines' blends are), each with export
step 2d's rule (per bucket: candidates with a paired gain above 0 on validation users, the smallest within one SE
of the best). Validation users on the checkpoint's validation prior; test users (K = 1..3) on the shipped prior,
paired against transition3+onboarding with its blend weight picked on validation users. Session 14, issue 20.

    python lab/onboarding_form.py CHECKPOINT BUNDLE/manifest.json OUT.json
"""
import sys, json, numpy as np
from metarec.sdk.protocol import next_item_queries, rank_metrics
from metarec.sdk.baselines import ItemKNN, Transition, zscore
from metarec.sdk.onboarding import onboarding_feature
from metarec.sdk.coldstart_diagnostics import paired_difference
from metarec.export.select import _paired
from metarec.export.select_onboarding import ONBOARDING_BUCKETS, ONBOARDING_WEIGHTS, _within_one_se
from _shipped_scorer import load, scorer

ck_path, man_path, out = sys.argv[1:4]
c = load(ck_path, man_path)
model, cfg, vprior, vcfg, ds, sp, log, spec, v = c.model, c.cfg, c.vprior, c.vcfg, c.ds, c.sp, c.log, c.spec, c.v
t3 = Transition(last=3).fit(ds, sp.train, log)
knn = ItemKNN().fit(ds, sp.train, log)

def rows(prior, tcfg, users, ks):
    rec = scorer(c, prior, tcfg)
    R = []
    for u, k, q, target in next_item_queries(ds, log, users, ks):
        if target in set(q.support_items.tolist()):
            continue
        s = rec.score(q); f = onboarding_feature(log, q.t, q.user, k, spec)
        sf = f.std()
        R.append(dict(u=u, k=k, s=s, f=f, zf=f * (s.std() / sf if sf > 0 else 0.0), t3=zscore(t3.score(q)), knn=zscore(knn.score(q)),
                      target=target, sup=q.support_items))
    return R


def ev(R, score, ks):
    R = [r for r in R if r['k'] in ks]
    hr = np.array([rank_metrics(score(r), r['target'], r['sup'])[0] for r in R])
    return {'user': np.array([r['u'] for r in R]), 'k': np.array([r['k'] for r in R]), 'hr': hr}


def term(r, form, w):
    return r['s'] + w * (r['f'] if form == 'raw' else r['zf'])


def choose(R, form):
    weights = {}
    for ks in ONBOARDING_BUCKETS:
        base = ev(R, lambda r: r['s'], ks)
        res = {w: ev(R, lambda r, w=w: term(r, form, w), ks) for w in ONBOARDING_WEIGHTS}
        gains = {w: _paired(x, base, ks) for w, x in res.items()}
        cands = [w for w in ONBOARDING_WEIGHTS if gains[w]['ci'][0] > 0]
        w = 0.0
        if cands:
            best = max(cands, key=lambda x: gains[x]['diff'])
            w = next(x for x in cands if x == best or _within_one_se(_paired(res[best], res[x], ks)))
        for k in ks:
            weights[k] = w
    return weights


V = rows(vprior, vcfg, sp.val, tuple(range(0, 11)))
T = rows(model, cfg, sp.test, (1, 2, 3))
HK = (1, 2, 3)
av = max(np.linspace(0, 1, 11), key=lambda a: ev(V, lambda r: (1 - a) * r['t3'] + a * zscore(r['f']), HK)['hr'].mean())
ref = ev(T, lambda r: (1 - av) * r['t3'] + av * zscore(r['f']), HK)
summary = {'t3onb_a': float(av), 't3onb_test': float(ref['hr'].mean())}
print('t3+onb a', round(av, 2), 'test', round(ref['hr'].mean(), 4), flush=True)
shipped = None
for form in ('raw', 'z'):
    wk = choose(V, form)
    r = ev(T, lambda r: term(r, form, wk[r['k']]), HK)
    p = paired_difference(r, ref)
    summary[form] = {'weights': {str(k): w for k, w in wk.items()}, 'test_hr10': float(r['hr'].mean()),
                     'minus_t3onb': p['hr10_diff'], 'ci': list(p['hr10_diff_ci'])}
    if shipped is None:
        shipped = r
    else:
        q = paired_difference(r, shipped)
        summary[form]['minus_raw'] = q['hr10_diff']; summary[form]['minus_raw_ci'] = list(q['hr10_diff_ci'])
    print(form, wk, 'test', round(r['hr'].mean(), 4), 'minus t3+onb', round(p['hr10_diff'], 4),
          [round(x, 4) for x in p['hr10_diff_ci']], flush=True)
print(summary.get('z', {}).get('minus_raw'), summary.get('z', {}).get('minus_raw_ci'))
json.dump(summary, open(out, 'w'), indent=1)
if '--curves' in sys.argv:  # validation and test HR@10 (K = 1..3) at every weight of both forms
    curves = {}
    for form in ('raw', 'z'):
        for w in (0.0,) + ONBOARDING_WEIGHTS + (16.0, 32.0):
            hv = ev(V, lambda r: term(r, form, w), HK)['hr'].mean(); ht = ev(T, lambda r: term(r, form, w), HK)['hr'].mean()
            curves[f'{form} {w:g}'] = [float(hv), float(ht)]
            print(form, w, 'val', round(hv, 4), 'test', round(ht, 4), flush=True)
    summary['curves'] = curves
    json.dump(summary, open(out, 'w'), indent=1)
if '--maximin' in sys.argv:  # K = 1..3: the weight whose paired difference to the checkpoint's best validation
    # baseline has the highest lower 95% bound (the floor-aware rule), per form; then read on test users
    base = {k: np.asarray(x) for k, x in v['baseline'].items()}
    grid = (0.0,) + ONBOARDING_WEIGHTS + (16.0, 32.0)
    for form in ('raw', 'z'):
        lows = {}
        for w in grid:
            p = paired_difference(ev(V, lambda r: term(r, form, w), HK), base, HK)
            lows[w] = p['hr10_diff_ci'][0]
        w = max(grid, key=lambda x: (lows[x], -x))
        r = ev(T, lambda r: term(r, form, w), HK)
        p = paired_difference(r, ref)
        print('maximin', form, {k: round(x, 4) for k, x in lows.items()}, '->', w, 'test', round(r['hr'].mean(), 4),
              'minus t3+onb', round(p['hr10_diff'], 4), [round(x, 4) for x in p['hr10_diff_ci']], flush=True)
        summary[f'maximin_{form}'] = {'lows': {str(k): x for k, x in lows.items()}, 'weight': w,
                                      'test_hr10': float(r['hr'].mean()), 'minus_t3onb': p['hr10_diff'],
                                      'ci': list(p['hr10_diff_ci'])}
    json.dump(summary, open(out, 'w'), indent=1)
if '--blend' in sys.argv:  # the prior plus w * std(s) * the best baseline blend (z-scored, its weight picked on
    # validation users): large w is the baseline itself, so the flat top's far end is the floor, not below it
    A = np.linspace(0, 1, 11)
    best = None
    for c in ('knn', 't3'):
        for a in A:
            hv = ev(V, lambda r: (1 - a) * r[c] + a * zscore(r['f']), HK)['hr'].mean()
            if best is None or hv > best[0]:
                best = (hv, c, a)
    _, c, a = best
    B = lambda r: (1 - a) * r[c] + a * zscore(r['f'])
    bref = ev(T, B, HK)
    print('best baseline blend', c, '+onb a', round(a, 2), 'val', round(best[0], 4), 'test', round(bref['hr'].mean(), 4))
    grid = (0.0, 0.0625, 0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 64.0)
    base_v = ev(V, lambda r: r['s'], HK)
    resv = {w: ev(V, lambda r, w=w: r['s'] + w * r['s'].std() * B(r), HK) for w in grid}
    rest = {w: ev(T, lambda r, w=w: r['s'] + w * r['s'].std() * B(r), HK) for w in grid}
    out_b = {'baseline': [c, float(a)], 'baseline_test': float(bref['hr'].mean()), 'curve': {}}
    for w in grid:
        p = paired_difference(rest[w], bref)
        out_b['curve'][str(w)] = [float(resv[w]['hr'].mean()), float(rest[w]['hr'].mean()), p['hr10_diff'], list(p['hr10_diff_ci'])]
        print('blend w', w, 'val', round(resv[w]['hr'].mean(), 4), 'test', round(rest[w]['hr'].mean(), 4),
              'minus baseline', round(p['hr10_diff'], 4), [round(x, 4) for x in p['hr10_diff_ci']], flush=True)
    gains = {w: _paired(resv[w], base_v, HK) for w in grid[1:]}
    cands = [w for w in grid[1:] if gains[w]['ci'][0] > 0]
    if cands:
        bw = max(cands, key=lambda x: gains[x]['diff'])
        se = next(x for x in cands if x == bw or _within_one_se(_paired(resv[bw], resv[x], HK)))
        print('argmax', bw, 'one-SE', se)
        out_b['argmax'], out_b['one_se'] = bw, se
    summary['blend'] = out_b
    json.dump(summary, open(out, 'w'), indent=1)
if '--blend' in sys.argv and '--wide' in sys.argv:  # the same blend weights read over validation K = 1..10 and 4..10
    for w in grid:
        h10 = ev(V, lambda r: r['s'] + w * r['s'].std() * B(r), tuple(range(1, 11)))['hr'].mean()
        h4 = ev(V, lambda r: r['s'] + w * r['s'].std() * B(r), tuple(range(4, 11)))['hr'].mean()
        print('wide w', w, 'val K1-10', round(h10, 4), 'K4-10', round(h4, 4), flush=True)
