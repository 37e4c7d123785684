import pytest

from metarec.export.config import CompressConfig, ExportConfig, parse_prune


@pytest.mark.parametrize("cfg", [CompressConfig(), CompressConfig(quant="int8", prune_dim=24, prune_prototypes=6,
                                                                 finetune_steps=50), ExportConfig(k_max=50)])
def test_json_round_trip(cfg):
    assert type(cfg).from_json(cfg.to_json()) == cfg


@pytest.mark.parametrize("kw", [dict(quant="int3"), dict(group_size=-1), dict(prune_dim=0), dict(version=9),
                                dict(finetune_steps=-1)])
def test_compress_config_rejects(kw):
    with pytest.raises(ValueError):
        CompressConfig(**kw)


@pytest.mark.parametrize("kw", [dict(k_max=0), dict(table_mode="constant"), dict(version=2), dict(rank_method=1),
                                dict(large_catalog_items=-1), dict(large_catalog_items=True),
                                dict(large_chunk_items=10, k_max=20)])
def test_export_config_rejects(kw):
    with pytest.raises(ValueError):
        ExportConfig(**kw)


def test_unknown_field_lists_known():
    with pytest.raises(ValueError, match="known"):
        CompressConfig.from_dict({"quant": "int8", "bits": 3})


def test_parse_prune():
    assert parse_prune("dim=24,prototypes=6") == {"prune_dim": 24, "prune_prototypes": 6}
    assert parse_prune(None) == {}
    for bad in ("dim", "width=3", "dim=x"):
        with pytest.raises(ValueError):
            parse_prune(bad)


def test_prune_targets_are_upper_bounds_for_the_model():
    c = CompressConfig(quant="int8", prune_dim=16, prune_prototypes=4, finetune_steps=7)
    assert c.for_model(32, 8) == c  # both shrink: kept as given
    same = c.for_model(16, 4)  # already the phone's shape: nothing to prune, nothing to re-fine-tune
    assert not same.prunes and same.quant == "int8" and same.finetune_steps == 7
    part = c.for_model(16, 8)  # only the prototypes shrink
    assert part.prune_dim is None and part.prune_prototypes == 4 and part.prunes
    assert CompressConfig().for_model(8, 2) == CompressConfig()


def test_group_size_capped_at_d():
    assert CompressConfig(quant="int4").table_group_size(16) == 16
    assert CompressConfig(quant="int4").table_group_size(64) == 32
    with pytest.raises(ValueError):
        CompressConfig(quant="int4").table_group_size(48)


def test_export_config_without_newer_fields_reads_as_it_was_written():
    """A bundle's recorded export config from before `rank_method` existed means a score.pte without it."""
    old = {k: v for k, v in ExportConfig().to_dict().items() if k != "rank_method"}
    assert ExportConfig.from_dict(old).rank_method is False
    assert ExportConfig().rank_method is True


def test_large_catalog_threshold():
    """The threshold picks the large-catalog program from the catalog size; 0 never does, nor a config written
    before the field existed (its bundle had the small program whatever its size)."""
    c = ExportConfig(large_catalog_items=5_000)
    assert not c.large_catalog(4_999) and c.large_catalog(5_000)
    assert not ExportConfig(large_catalog_items=0).large_catalog(10**6)
    old = {k: v for k, v in ExportConfig().to_dict().items() if not k.startswith("large_")}
    assert not ExportConfig.from_dict(old).large_catalog(10**6)
    assert ExportConfig().large_catalog(10**6) and not ExportConfig().large_catalog(1_682)


@pytest.mark.parametrize("cls", [CompressConfig, ExportConfig])
def test_configs_are_versioned(cls):
    cfg = cls()
    assert cls.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=f"{cls.__name__} version 2 unknown"):
        cls.from_dict({**cfg.to_dict(), "version": 2})
    with pytest.raises(ValueError, match="known"):
        cls.from_dict({"colour": "red"})
