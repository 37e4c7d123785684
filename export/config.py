"""Versioned stage configs of export (docs/architecture.md, "Configs": dataclass, `version`, ValueError, JSON).

Both land verbatim in the bundle manifest (`configs.compress`, `configs.export`), so a bundle says how it was made.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

from metarec.runtime.bundle_codecs import PROGRAM_CODECS
from metarec.runtime.config import VersionedConfig

COMPRESS_CONFIG_VERSION = 1
EXPORT_CONFIG_VERSION = 1
QUANTS = ("none", "int8", "int4", "mixed")
TABLE_MODES = ("input",)  # the small program's (programs.py); large catalogs: `large_catalog_items`
ADAPT_MODES = ("training",)


@dataclasses.dataclass(frozen=True)
class CompressConfig(VersionedConfig):
    """What happens to the prior before it becomes programs: structured pruning, then table quantization.

    >>> CompressConfig(quant="int4", prune_dim=24).group_size
    32
    """

    VERSION = COMPRESS_CONFIG_VERSION
    # configs recorded before session 11 shipped float32 scales, before session 12 a float32 phi0
    LEGACY: ClassVar[dict] = {"scale_dtype": "float32", "head_dtype": "float32"}
    version: int = COMPRESS_CONFIG_VERSION
    quant: str = "int4"  # (str) item table storage: none (float32) | int8 | int4 | mixed, symmetric, torchao-quantized
    int8_share: float = 0.1  # (float) quant mixed: share of rows (the items fit users used most) kept int8, rest int4
    group_size: int = 32  # (int) columns sharing one scale (capped at d; 0: one scale per row)
    scale_dtype: str = "float16"  # (str) the scales' storage: float16 | float32 (half the scale bytes, same SNR)
    head_dtype: str = "float16"  # (str) phi0's storage (head0.bin): float16 | float32; rounded at export, so measured
    prune_dim: int | None = None  # (int|None) item/user dimensions kept (by measured importance); None: all
    prune_prototypes: int | None = None  # (int|None) interest prototypes kept (by measured usage); None: all
    finetune_steps: int = 100  # (int) meta-training steps after pruning (from a checkpoint: its data; 0: none)
    importance_samples: int = 512  # (int) histories used to measure dimension / prototype importance

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.quant not in QUANTS:
            raise ValueError(f"quant {self.quant!r} unknown; known: {list(QUANTS)}")
        for name in ("scale_dtype", "head_dtype"):
            if getattr(self, name) not in ("float16", "float32"):
                raise ValueError(f"{name} {getattr(self, name)!r} unknown; known: float16, float32")
        if isinstance(self.int8_share, bool) or not isinstance(self.int8_share, (int, float)) \
                or not 0.0 <= self.int8_share <= 1.0:
            raise ValueError(f"int8_share must be a number in [0, 1], got {self.int8_share!r}")
        if not isinstance(self.group_size, int) or self.group_size < 0:
            raise ValueError(f"group_size must be an int >= 0, got {self.group_size!r}")
        for name in ("prune_dim", "prune_prototypes"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be None or an int >= 1, got {v!r}")
        if self.finetune_steps < 0 or self.importance_samples < 1:
            raise ValueError("finetune_steps must be >= 0 and importance_samples >= 1")

    @property
    def prunes(self) -> bool:
        return self.prune_dim is not None or self.prune_prototypes is not None

    def for_model(self, dim: int, n_prototypes: int) -> "CompressConfig":
        """The prune targets are upper bounds: a target at or above the model's size is dropped (None), so a model
        already at the phone's shape is neither pruned nor re-fine-tuned, and the manifest records what was done.

        >>> CompressConfig(prune_dim=16, prune_prototypes=4).for_model(16, 4).prunes
        False
        """
        d = self.prune_dim if self.prune_dim is not None and self.prune_dim < dim else None
        m = self.prune_prototypes if self.prune_prototypes is not None and self.prune_prototypes < n_prototypes \
            else None
        return dataclasses.replace(self, prune_dim=d, prune_prototypes=m)

    def table_group_size(self, d: int) -> int:
        """Group size actually used for a d-column table (0 means one scale per row)."""
        if self.quant == "none":
            return 0
        # The table reaches score.pte dequantized (programs.py), so XNNPACK's int4 rule (group % 32 == 0) does not
        # bind here; a pruned d below the group size gets one scale per row.
        g = min(self.group_size or d, d)
        if d % g:
            raise ValueError(f"group_size {g} does not divide the table width d={d}")
        return g


def parse_prune(spec: str | dict | None) -> dict:
    """`"dim=24,prototypes=6"` -> {"prune_dim": 24, "prune_prototypes": 6} (CLI `--prune`); None -> {}."""
    if spec is None or spec == "":
        return {}
    if isinstance(spec, dict):
        items = spec.items()
    else:
        items = []
        for part in str(spec).split(","):
            if "=" not in part:
                raise ValueError(f"prune spec part {part!r} is not key=value (e.g. dim=24,prototypes=6)")
            k, v = part.split("=", 1)
            items.append((k.strip(), v.strip()))
    keys = {"dim": "prune_dim", "prototypes": "prune_prototypes", "finetune_steps": "finetune_steps"}
    out = {}
    for k, v in items:
        if k not in keys:
            raise ValueError(f"prune key {k!r} unknown; known: {sorted(keys)}")
        try:
            out[keys[k]] = int(v)
        except (TypeError, ValueError) as e:
            raise ValueError(f"prune {k}={v!r} is not an int") from e
    return out


@dataclasses.dataclass(frozen=True)
class ExportConfig(VersionedConfig):
    """How the compressed prior becomes a bundle."""

    VERSION = EXPORT_CONFIG_VERSION
    version: int = EXPORT_CONFIG_VERSION
    k_max: int = 20  # (int) top-k capacity of score.pte, a screen (docs/decisions/score-top-k.md)
    table_mode: str = "input"  # (str) how score.pte reaches the item table (programs.py explains the choice)
    adapt_mode: str = "training"  # (str) adapt.pte kind: an executorch.extension.training program
    program_codec: str = "zlib"  # (str) how .pte files are stored (bundle_codecs.PROGRAM_CODECS): zlib | none
    onnx: bool = True  # (bool) also write model.onnx (the scorer for other runtimes; not part of the phone budget)
    model_version: str = ""  # (str) "" = derived from the checkpoint's weights (sha256 prefix)
    rank_method: bool = True  # (bool) score.pte ranks from a cached user vector (docs/decisions/rank-method.md)
    accuracy_budget: float = 0.02  # (float) most relative val HR@10 an auto compression may cost (export/select.py)
    large_catalog_items: int = 100_000  # (int) catalogs this large get the chunked score.pte (export/large.py); 0: never
    large_chunk_items: int = 262_144  # (int) items per chunk of the large-catalog score.pte (1 MiB of fp32 scores)
    # the item-item term's table is the server's statistics, refreshed like trending, and N x m x 6 bytes (ML-100K, m=20: 197 KB)
    neighbors_in_bundle: bool = False  # (bool) the term's table in the bundle (neighbors.bin), not only in neighbour packs

    # fields added after version 1 shipped, with the value a config written before them meant
    LEGACY: ClassVar[dict] = {"rank_method": False, "accuracy_budget": 0.02, "large_catalog_items": 0,
                              "large_chunk_items": 262_144, "neighbors_in_bundle": True}

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.k_max, int) or self.k_max < 1:
            raise ValueError(f"k_max must be an int >= 1, got {self.k_max!r}")
        if self.table_mode not in TABLE_MODES:
            raise ValueError(f"table_mode {self.table_mode!r} unknown; known: {list(TABLE_MODES)}")
        if self.adapt_mode not in ADAPT_MODES:
            raise ValueError(f"adapt_mode {self.adapt_mode!r} unknown; known: {list(ADAPT_MODES)}")
        if self.program_codec not in PROGRAM_CODECS:
            raise ValueError(f"program_codec {self.program_codec!r} unknown; known: {list(PROGRAM_CODECS)}")
        if not isinstance(self.model_version, str):
            raise ValueError("model_version must be a str")
        for name in ("rank_method", "neighbors_in_bundle"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if not (isinstance(self.accuracy_budget, (int, float)) and 0 <= self.accuracy_budget < 1):
            raise ValueError(f"accuracy_budget must be in [0, 1), got {self.accuracy_budget!r}")
        for name in ("large_catalog_items", "large_chunk_items"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an int >= 0, got {v!r}")
        if self.large_chunk_items < self.k_max:
            raise ValueError(f"large_chunk_items={self.large_chunk_items} must hold k_max={self.k_max} items")

    def large_catalog(self, n_items: int) -> bool:
        """Whether a catalog of `n_items` gets the large-catalog score.pte."""
        return 0 < self.large_catalog_items <= n_items
