"""Would the item-item term pay once the onboarding term is on? (session 18, issue 20)

Export chooses the item-item term (step 2b) before the onboarding term (2d). This re-runs steps 1-2d on a
checkpoint's validation run as export does, then measures the term's grid again with the chosen onboarding term
in the scorer (export/select.py `_choose_neighbors` over a scorer with it), and prints the best grid rows.

    python lab/reselect_neighbors.py CHECKPOINT
"""
import sys
from export_steps import export_steps
from metarec.export import select as S

st = export_steps(sys.argv[1])
ds, log, tcfg, prior, users, base, ob = st.ds, st.log, st.tcfg, st.prior, st.users, st.base, st.ob
say = print
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
