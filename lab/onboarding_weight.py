"""The product's scorer (a checkpoint's prior served as its bundle's manifest says: steps, item-item term) plus
w * log1p(onboarding count at K +- 3, last week), w on a grid: validation users on the checkpoint's validation prior
(K = 1..10, split K = 1..3 / 4..10), then test users on the shipped prior (K = 1..3, paired against w = 0) when
--test is given. Session 13, issue 20 (docs/decisions/onboarding.md).

    python lab/onboarding_weight.py CHECKPOINT BUNDLE/manifest.json [--test]
"""
import sys, json, numpy as np, torch, dataclasses
from metarec.sdk.data import load_dataset
from metarec.sdk.protocol import EventLog, split_users, next_item_queries, rank_metrics
from metarec.sdk.train import load_checkpoint, model_from_state, TrainConfig
from metarec.sdk.neighbors import LiveNeighbors
from metarec.sdk.coldstart_diagnostics import paired_difference
from metarec.export.select import _recommender, _with_steps
WEEK=7*86400.0
ck_path, man_path = sys.argv[1], sys.argv[2]
ck=torch.load(ck_path, weights_only=False)
man=json.load(open(man_path)); nbm=man.get('neighbors'); steps=man['configs']['selection'].get('steps',{})
model, cfg, _ = load_checkpoint(ck_path)
v=ck['validation']; vcfg=TrainConfig.from_dict(v['train_config']); vprior=model_from_state(vcfg,int(v['n_items']),v['state_dict'])
ds=load_dataset(cfg.dataset); sp=split_users(ds); log=EventLog(ds)
pos=np.empty(len(log.user),np.int64)
for u in range(ds.n_users):
    r=log.user_rows(u); pos[r]=np.arange(len(r))
def posc(q, w=3):
    K=len(q.support_items); hi=log.cut(q.t); lo=int(np.searchsorted(log.ts,q.t-WEEK,side='left'))
    m=(log.user[lo:hi]!=q.user)&(np.abs(pos[lo:hi]-K)<=w)
    return np.log1p(np.bincount(log.item[lo:hi][m],minlength=ds.n_items).astype(float))
inner = int(man['configs']['model']['inner_steps']) if 'model' in man['configs'] else 0
print('inner steps shipped', man['configs'].get('train',{}).get('model',{}).get('inner_steps'))
def rows(prior, tcfg, users, ks=(1,2,3)):
    prior=_with_steps(prior, 0)
    nb=(LiveNeighbors(nbm['kind'], nbm['m']), nbm['last'], nbm['decay'], nbm['weight']) if nbm else None
    rec=_recommender(prior, tcfg, nb=nb)
    out=[]
    for u,k,q,target in next_item_queries(ds,log,users,ks):
        if target in set(q.support_items.tolist()): continue
        s=rec.score(q); f=posc(q); out.append((u,k,s,f,target,q.support_items, q.trending))
    return out
def evalw(R, w, z=False):
    hr=[]
    for u,k,s,f,t,sup,tr in R:
        sc = s + w*f*(np.std(s) if z else 1.0)
        hr.append(rank_metrics(sc,t,sup)[0])
    return {'user':np.array([r[0] for r in R]),'k':np.array([r[1] for r in R]),'hr':np.array(hr)}
W=(0,0.125,0.25,0.5,1,2,4,8)
V=rows(vprior, vcfg, sp.val, tuple(range(1,11)))
for w in W:
    r=evalw(V,w); h=r["hr"]; k=r["k"]; print("val w",w, "K1-10", round(h.mean(),4), "K1-3", round(h[k<=3].mean(),4), "K4-10", round(h[k>3].mean(),4), flush=True)
if '--test' not in sys.argv: sys.exit(0)
T=rows(model, cfg, sp.test)
base=evalw(T,0)
for w in W:
    r=evalw(T,w); p=paired_difference(r,base)
    print('test w',w, round(r['hr'].mean(),4), 'vs w0', round(p['hr10_diff'],4), [round(x,4) for x in p['hr10_diff_ci']], flush=True)
