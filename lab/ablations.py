"""Every ablation and evidence run of the cold-start report: name -> (TrainConfig overrides, ModelConfig overrides).

Evidence, not library: `metarec.sdk.coldstart` runs whichever entries it is given, e.g.
    python -m metarec.sdk.coldstart --ablations-file lab/ablations.py --users val --part ablations \
        --ablation-seeds 0,1 --ablations "3 inner steps;0 inner steps (trained with 0)"
Each group below states the question it answered and its result; the figures and commands are in the results file
it names. An evidence entry is pinned to the settings it was measured with (its own overrides win), so a name keeps
its figures when the defaults move or under another base config (bench/results/d16_x2/train_config.json).
"""
from __future__ import annotations

# outer loss / budget before wt-ml3 (a top-10 term, later weight 1 and 1500 steps were proposed; not adopted)
PREV_DEFAULT = {"topk_weight": 0.0, "future_weight": 0.3, "steps": 600}
# wt-ml3's runs used 3 inner steps (the default then) and no trend calibration
PREV_MODEL = {"inner_steps": 3, "trend_hist_scale": 1.0}
# wt-ml4's and session 6's runs were measured before the trend calibration
PRE_CALIBRATION = {"trend_hist_scale": 1.0}
# every evidence entry was measured with the d=32, M=8 prior
PRE_S6_SHAPE = {"dim": 32, "n_prototypes": 8}


def _pinned(model: dict, entries: dict, train: dict | None = None) -> dict:
    """`entries` with the measured settings under their own overrides."""
    return {name: ({**(train or {}), **tr}, {**model, **mo}) for name, (tr, mo) in entries.items()}


# The issue's ablations, under whatever base config the run uses (bench/results/coldstart.md, test users).
ISSUE = {
    "full (metasgd, 1 step)": ({}, {}),
    "no prototypes": ({}, {"use_prototypes": False}),
    "no scene encoder": ({}, {"use_scene": False}),
    "no trending input": ({}, {"use_trend": False}),
    "no meta-learning (pretrain + fine-tune)": ({"learner": "finetune"}, {}),
    "maml (2nd order)": ({"learner": "maml"}, {}),
    "maml (1st order)": ({"learner": "fomaml"}, {}),
    "reptile": ({"learner": "reptile"}, {}),
    "metric (no gradient step)": ({"learner": "metric"}, {}),
    "0 inner steps (trained with 0)": ({}, {"inner_steps": 0}),
    "3 inner steps": ({}, {"inner_steps": 3}),
    # docs/decisions/scene-lr-mult.md: synthetic lift 1.78 -> 3.11 logits, but the phone bundle lost 4.9% at 10x
    "scene pathway 10x rate": ({"scene_lr_mult": 10.0}, {}),
    "no trend calibration (trend_hist_scale 1)": ({}, {"trend_hist_scale": 1.0}),
    # session 8 (docs/decisions/pop-prior.md): the popularity prior in the bias, off
    "no popularity prior": ({}, {"pop_prior": False}),
    # the default (d=32, M=8, pruned to 16 / 4 at export, no calibration) named for runs under another base config
    # (bench/results/d16_x2: the same as "full" under the default)
    "previous default (d=32, M=8, trend scale 1)": ({}, {"dim": 32, "n_prototypes": 8, "trend_hist_scale": 1.0}),
}

# wt-ml3, validation users, seeds 0,1 (bench/results/adaptation_val.md). Q: what does adaptation need to earn its
# place on the learning curve? A: no inner-loss variant beat the default; top-10 + later weight 1 + 1500 steps
# lifted Recall@10 K=3 0.103 -> 0.127 but lost 4.7% in the phone bundle and did not beat its 0-step twin
# (docs/decisions/outer-loss.md, inner-loss.md, meta-holdout.md, rate-lr-mult.md).
WT_ML3 = _pinned({**PRE_S6_SHAPE, **PREV_MODEL}, {
    "spread negatives (inner loss)": ({"negatives": "spread"}, {}),
    "next-item support loss": ({}, {"support_target": "next"}),
    "next-item support loss + spread negatives": ({"negatives": "spread"}, {"support_target": "next"}),
    "previous default (CE, later weight 0.3, 600 steps)": ({}, {}),
    "previous default, 0 inner steps": ({}, {"inner_steps": 0}),
    "catalog negatives (inner loss)": ({"negatives": "catalog"}, {}),
    "catalog negatives + item bias (inner loss)": ({"negatives": "catalog"}, {"inner_bias": True}),
    "top-10 outer term": ({"topk_weight": 1.0}, {}),
    "top-10 outer term, 0 inner steps": ({"topk_weight": 1.0}, {"inner_steps": 0}),
    "later targets from event 11": ({"later_start": 10}, {}),
    "later targets from event 11, 0 inner steps": ({"later_start": 10}, {"inner_steps": 0}),
    "later targets weight 1": ({"future_weight": 1.0}, {}),
    "later targets weight 1, 0 inner steps": ({"future_weight": 1.0}, {"inner_steps": 0}),
    "top-10 outer term + later targets weight 1": ({"topk_weight": 1.0, "future_weight": 1.0}, {}),
    "top-10 outer term + later targets weight 1, 0 inner steps": ({"topk_weight": 1.0, "future_weight": 1.0},
                                                                  {"inner_steps": 0}),
    "step sizes learn 30x faster": ({"rate_lr_mult": 30.0}, {}),
    "step sizes learn 30x faster, init 0.3": ({"rate_lr_mult": 30.0}, {"init_lr": 0.3}),
    "meta hold-out 30%": ({"meta_holdout_frac": 0.3}, {}),
    "meta hold-out 30%, step sizes learn 30x faster": ({"meta_holdout_frac": 0.3, "rate_lr_mult": 30.0}, {}),
    "meta hold-out 50%, step sizes learn 30x faster": ({"meta_holdout_frac": 0.5, "rate_lr_mult": 30.0}, {}),
    "top-10 + later weight 1 + meta hold-out 30% + rates 30x": (
        {"topk_weight": 1.0, "future_weight": 1.0, "meta_holdout_frac": 0.3, "rate_lr_mult": 30.0}, {}),
    "1500 training steps": ({"steps": 1500}, {}),
    "1500 training steps, 0 inner steps": ({"steps": 1500}, {"inner_steps": 0}),
    # = the wt-ml3 candidate default (not adopted: docs/decisions/outer-loss.md) and its twin, by name
    "top-10 outer term + later targets weight 1, 1500 steps": ({"topk_weight": 1.0, "future_weight": 1.0,
                                                                "steps": 1500}, {}),
    "top-10 outer term + later targets weight 1, 1500 steps, 0 inner steps": (
        {"topk_weight": 1.0, "future_weight": 1.0, "steps": 1500}, {"inner_steps": 0}),
    "top-10 weight 3 + later targets weight 1, 1500 steps": ({"topk_weight": 3.0, "future_weight": 1.0,
                                                              "steps": 1500}, {}),
    "top-10 weight 0.3 + later targets weight 1, 1500 steps": ({"topk_weight": 0.3, "future_weight": 1.0,
                                                                "steps": 1500}, {}),
    "top-10 + later weight 1 + meta hold-out 30% + rates 30x, 1500 steps": (
        {"topk_weight": 1.0, "future_weight": 1.0, "meta_holdout_frac": 0.3, "rate_lr_mult": 30.0, "steps": 1500},
        {}),
}, PREV_DEFAULT)

# wt-ml4 (issue 4), validation users, seeds 0,1 (+2,3 for the candidates) (bench/results/headline_val.md). Q: which
# config lever or trend mechanism raises the cold-start headline? A: none clears the bar; the per-K trend gate is the
# only consistent mover (+0.009 / +0.012 HR@10 over 4 seeds), which led to the trend calibration.
WT_ML4 = _pinned({**PRE_S6_SHAPE, **PRE_CALIBRATION}, {
    "next item only (future weight 0)": ({"future_weight": 0.0}, {}),
    "outer lr 3e-3": ({"lr": 0.003}, {}),
    "1200 training steps": ({"steps": 1200}, {}),
    "batch 512": ({"batch_size": 512}, {}),
    "dim 64": ({}, {"dim": 64}),
    "head hidden 32": ({}, {"head_hidden": 32}),
    "16 prototypes": ({}, {"n_prototypes": 16}),
    "id dropout 0.1": ({}, {"id_dropout": 0.1}),
    "id dropout 0.5": ({}, {"id_dropout": 0.5}),
    "all tasks cold (early frac 1)": ({"early_frac": 1.0}, {}),
    "id weight decay 1e-4": ({"weight_decay": 1e-4}, {}),
    "trend knots (learned count response)": ({}, {"trend_knots": 4}),
    "per-item trend sensitivity": ({}, {"trend_item": True}),
    "trend gate by support size": ({}, {"trend_by_k": True}),
    "trend x affinity": ({}, {"trend_affinity": True}),
    "trend knots + gate by support size + affinity": ({}, {"trend_knots": 4, "trend_by_k": True,
                                                            "trend_affinity": True}),
    "trend weight learns on held-out users (30%)": ({"meta_holdout_frac": 0.3, "holdout_trend": True}, {}),
    "trend gate by support size, learns on held-out users (30%)": (
        {"meta_holdout_frac": 0.3, "holdout_trend": True}, {"trend_by_k": True}),
    "meta hold-out 30% (1 step)": ({"meta_holdout_frac": 0.3}, {}),
    "trend sensitivity from attributes": ({}, {"trend_attr": True}),
    "trend gate by support size + trend sensitivity from attributes": ({}, {"trend_by_k": True, "trend_attr": True}),
    "trend gate by support size (seen items only)": ({}, {"trend_by_k": True, "trend_by_k_new": False}),
    "trend gate by support size (seen items only) + trend sensitivity from attributes": (
        {}, {"trend_by_k": True, "trend_by_k_new": False, "trend_attr": True}),
    "trend gate by support size, id dropout 0.5": ({}, {"trend_by_k": True, "id_dropout": 0.5}),
})

# Session 6, validation users, seeds 0-3 (bench/results/adaptation_val.md, "Session 6"). Q: does a gradient step earn
# its place when the support reaches z only through it and the prototypes (no sequence summary)? A: only at K=10
# (0.192 vs the twin's 0.182); at K=3 the 0-step twin is ahead in every seed (0.119 vs 0.113).
# The phone's shape trained as such (bench/results/compress_val/README.md; the whole chain on test users:
# bench/results/d16_x2/): not adopted (docs/decisions/prior-shape.md).
SESSION_6 = _pinned({**PRE_S6_SHAPE, **PRE_CALIBRATION}, {
    "no sequence summary": ({}, {"use_seq": False}),
    "no sequence summary, 0 inner steps": ({}, {"use_seq": False, "inner_steps": 0}),
    "no sequence summary, 3 inner steps": ({}, {"use_seq": False, "inner_steps": 3}),
    "no sequence summary, 3 inner steps, catalog negatives + item bias": (
        {"negatives": "catalog"}, {"use_seq": False, "inner_steps": 3, "inner_bias": True}),
    "no sequence summary, trend x2": ({}, {"use_seq": False, "trend_hist_scale": 2.0}),
    "trend x2": ({}, {"trend_hist_scale": 2.0}),
    "dim 16, 4 prototypes": ({}, {"dim": 16, "n_prototypes": 4}),
    "dim 16, 4 prototypes, trend x2": ({}, {"dim": 16, "n_prototypes": 4, "trend_hist_scale": 2.0}),
})

ABLATIONS: dict[str, tuple[dict, dict]] = {**ISSUE, **WT_ML3, **WT_ML4, **SESSION_6}

# Session 13, validation users (bench/results/selection/README.md "Session 13"; lab/weight_average.py). Q: does averaging the weights of the last
# steps (Polyak tail) lift the prior on every dataset, at no byte or serving cost?
SESSION_13 = {
    "tail average 25%": ({"average_last": 0.25}, {}),
    "tail average 50%": ({"average_last": 0.5}, {}),
}

ABLATIONS.update(SESSION_13)
