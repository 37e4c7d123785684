"""Which "what users at this history length took lately" count predicts a cold user's next item? Per query with K
support events: other users' events in the week before, at history positions K +- w (or the first 20 / 50), ranked
(ties by the 7-day count, then popularity), against the 7-day trending baseline. No training. Session 13, issue 20
(docs/decisions/onboarding.md).

    python lab/onboarding_span.py DATASET [val|test]
"""
import sys, numpy as np
from metarec.sdk.data import load_dataset
from metarec.sdk.protocol import EventLog, evaluate_users, split_users
from metarec.sdk.baselines import Trending
WEEK=7*86400.0
ds=load_dataset(sys.argv[1]); sp=split_users(ds); log=EventLog(ds)
pos=np.empty(len(log.user),np.int64)
for u in range(ds.n_users):
    r=log.user_rows(u); pos[r]=np.arange(len(r))
class PosTrend:
    def __init__(s,w,maxpos=None,window=WEEK): s.w=w; s.maxpos=maxpos; s.window=window
    def score(s,q):
        K=len(q.support_items); hi=log.cut(q.t); lo=int(np.searchsorted(log.ts,q.t-s.window,side='left'))
        it=log.item[lo:hi]; u=log.user[lo:hi]; p=pos[lo:hi]
        m=(u!=q.user)
        if s.maxpos is not None: m&=p<s.maxpos
        else: m&=np.abs(p-K)<=s.w
        c=np.bincount(it[m],minlength=ds.n_items).astype(float)
        M=q.popularity.max()+1.0
        return c*(q.trending.max()+1)*M + q.trending*M + q.popularity
users=sp.val if len(sys.argv)<3 else getattr(sp,sys.argv[2])
def hr(r): return np.mean(r['hr'][np.isin(r['k'],(1,2,3))])
base=evaluate_users(Trending(),ds,users,log)
print('trending',round(hr(base),4))
for name,m in [('pos+-1',PosTrend(1)),('pos+-3',PosTrend(3)),('pos+-10',PosTrend(10)),('first20',PosTrend(0,20)),('first50',PosTrend(0,50)),('pos+-3 1day',PosTrend(3,window=86400.0))]:
    r=evaluate_users(m,ds,users,log); print(name, round(hr(r),4), flush=True)
