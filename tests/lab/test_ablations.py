"""lab/ablations.py is evidence, not library, but an entry naming a field that does not exist (or a value out of
range) must fail here, not an hour into a run."""
from pathlib import Path

from metarec.sdk.coldstart import CORE_VARIANTS, load_ablations, variant_config
from metarec.sdk.train import TrainConfig

ABLATIONS = load_ablations(Path(__file__).resolve().parents[2] / "lab" / "ablations.py")


def test_every_ablation_is_a_valid_config():
    for name, (tr, mo) in ABLATIONS.items():
        cfg = variant_config(TrainConfig(), name, seed=3, ablations=ABLATIONS)
        assert cfg.seed == 3 and not cfg.progress
        assert all(getattr(cfg.model, k) == v for k, v in mo.items()), name
        assert all(getattr(cfg, k) == v for k, v in tr.items()), name


def test_the_issue_ablations_and_the_core_variants_are_there():
    required = {"no prototypes", "no scene encoder", "no trending input", "no meta-learning (pretrain + fine-tune)",
                "maml (2nd order)", "maml (1st order)", "reptile", "metric (no gradient step)",
                "0 inner steps (trained with 0)", "3 inner steps"}  # the issue's list; 1 step = the full model
    assert required <= set(ABLATIONS)
    assert all(ABLATIONS[n] == entry for n, entry in CORE_VARIANTS.items())  # same names, same meaning
