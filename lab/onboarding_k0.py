"""Does the onboarding term help a new user (K = 0)? The checkpoint's validation prior on validation users and the
shipped prior on test users, K = 0 queries, with the term at weights 0.5 / 1 / 2 against none, paired. Session 13
(docs/decisions/onboarding.md).

    python lab/onboarding_k0.py CHECKPOINT
"""
import sys, numpy as np, torch
from metarec.sdk.data import load_dataset
from metarec.sdk.protocol import EventLog, split_users, evaluate_users
from metarec.sdk.train import load_checkpoint, model_from_state, TrainConfig
from metarec.runtime.manifest import OnboardingSpec
from metarec.export.select import _recommender, _with_steps
from metarec.sdk.coldstart_diagnostics import paired_difference
ck_path=sys.argv[1]; ck=torch.load(ck_path, weights_only=False)
model, cfg, _ = load_checkpoint(ck_path)
v=ck['validation']; vcfg=TrainConfig.from_dict(v['train_config']); vprior=model_from_state(vcfg,int(v['n_items']),v['state_dict'])
ds=load_dataset(cfg.dataset); sp=split_users(ds); log=EventLog(ds)
for name,(prior,tcfg,users) in {'val':(vprior,vcfg,sp.val),'test':(model,cfg,sp.test)}.items():
    base=evaluate_users(_recommender(_with_steps(prior,0),tcfg),ds,users,log,ks=(0,))
    for w in (0.5,1.0,2.0):
        r=evaluate_users(_recommender(_with_steps(prior,0),tcfg,ob=OnboardingSpec(weight=(w,),span=3,window_days=7.0)),ds,users,log,ks=(0,))
        p=paired_difference(r,base,(0,))
        print(name,'K=0 w',w,round(base['hr'].mean(),4),'->',round(r['hr'].mean(),4),round(p['hr10_diff'],4),[round(x,4) for x in p['hr10_diff_ci']],flush=True)
