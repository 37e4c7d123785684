"""Would weights by the time since the user's last event pay? (session 19, issue 20)

Session 18 found that on real data a scene change is mostly a new session: sequence terms lose their power there
while popularity holds (ML-1M, K = 1..10). This re-runs export's steps 1-2d on a checkpoint's validation run, then,
for the validation queries whose gap (target time - last support event) is at least G, re-ranks them with the
shipped scorer plus an extra popularity weight b and the item-item term scaled by a, and prints the best (a, b) per
G, paired over that bucket's queries and over all queries, and the changed/same-scene HR before and after.

    python lab/gap_weights.py CHECKPOINT
"""
import sys
import numpy as np
from export_steps import export_steps
from metarec.export import select as S
from metarec.runtime.manifest import at_length
from metarec.runtime.neighbors import neighbor_term
from metarec.sdk.protocol import next_item_queries, rank_metrics, scene_labels
from metarec.sdk.coldstart_diagnostics import paired_difference

st = export_steps(sys.argv[1])
ds, log, tcfg, prior, users = st.ds, st.log, st.tcfg, st.prior, st.users
nb, best_nb, bh, ob = st.nb, st.best_nb, st.bh, st.ob
print("shipped: nb", None if nb is None else (nb[0].kind, nb[0].m, nb[3]), "bh", bh, "ob", ob)

shipped = S._Memo(S._recommender(prior, tcfg, nb=nb, bh=bh, ob=ob))
term_nb = nb or best_nb
feat = prior.per_user(S.popularity_feature) if getattr(prior.cfg, "pop_prior", False) else None
Q = []  # (user, k, gap_s, changed, s_full, term@1, w_k, feature, target, support)
for u, k, q, target in next_item_queries(ds, log, users, S.SELECT_KS):
    if target in set(q.support_items.tolist()):
        continue
    s = shipped.score(q)
    term = (np.zeros(0, np.int64), np.zeros(0, np.float32))
    wk = 0.0
    if term_nb is not None:
        live, last, decay, w = term_nb
        ids, wts, local = live.rows(q.log, q.support_items, q.t, q.user, last)
        term = neighbor_term(ids, wts, local, last, decay, 1.0, len(s))
        wk = (at_length(tuple(bh["term"]), k, w) if bh and bh["term"] else w) if nb is not None else 0.0
    lab = scene_labels(np.r_[q.support_ts[-1:], q.t])
    Q.append((u, k, float(q.t - q.support_ts[-1]), bool(lab[0] != lab[1]), s, term, wk,
              feat(u) if feat is not None else None, target, np.asarray(q.support_items)))
print(f"{len(Q)} queries; gap quantiles (h):",
      np.round(np.quantile([x[2] for x in Q], [0.25, 0.5, 0.75, 0.9]) / 3600, 2))


def run(sel, a, b):
    hr = np.empty(len(Q))
    for i, (u, k, g, ch, s, (ti, tv), wk, f, target, sup) in enumerate(Q):
        if sel[i] and (a != 1 or b):
            s = s.copy()
            if b and f is not None:
                s = s + b * f
            if a != 1 and len(ti):
                s[ti] += (a - 1) * wk * tv
        hr[i] = rank_metrics(s, target, sup)[0]
    return {"user": np.array([x[0] for x in Q]), "k": np.array([x[1] for x in Q]), "hr": hr}


K = np.array([x[1] for x in Q]); gap = np.array([x[2] for x in Q]); ch = np.array([x[3] for x in Q])
r0 = run(np.zeros(len(Q), bool), 1, 0)


def show(name, res, mask):
    def hr(m):
        return float(res["hr"][m].mean()) if m.any() else float("nan")
    for ks, lab in ((S.HEADLINE_KS, "K1-3"), (S.SELECT_KS, "K1-10")):
        km = np.isin(K, ks)
        print(f"  {name} {lab}: all {hr(km):.3f}  changed {hr(km & ch):.3f} (n {int((km & ch).sum())})  same "
              f"{hr(km & ~ch):.3f}  retention {hr(km & ch) / hr(km & ~ch):.3f}  bucket {hr(km & mask):.3f} "
              f"(n {int((km & mask).sum())})")


AS, BS = (0.0, 0.25, 0.5, 1.0, 2.0), (-1.0, 0.0, 0.5, 1.0, 2.0, 4.0)
for G in (1800, 3 * 3600, 24 * 3600, "changed"):
    sel = ch if G == "changed" else gap >= G
    best = None
    for a in AS:
        for b in BS:
            if (a, b) == (1.0, 0.0) or (b and feat is None):
                continue
            r = run(sel, a, b)
            sub = {kk: v[sel] for kk, v in r.items()}
            sub0 = {kk: v[sel] for kk, v in r0.items()}
            p = paired_difference(sub, sub0, S.SELECT_KS)
            if best is None or p["hr10_diff"] > best[2]["hr10_diff"]:
                best = (a, b, p, r)
    a, b, p, r = best
    print(f"G={G}: bucket n={int(sel.sum())}; best a={a} b={b}: bucket {p['hr10_diff']:+.4f} "
          f"[{p['hr10_diff_ci'][0]:+.4f}, {p['hr10_diff_ci'][1]:+.4f}]; all K1-10 "
          f"{S._paired(r, r0)['diff']:+.4f} {S._paired(r, r0)['ci']}; K1-3 {S._paired(r, r0, S.HEADLINE_KS)}")
    show("before", r0, sel)
    show("after ", r, sel)
