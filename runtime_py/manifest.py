"""The bundle contract, part 1 of 2: the manifest schema (v2) and every name a bundle's writer and reader share.

Part 2, bundle_codecs.py (with table_codec.py for the item table), holds the byte formats of the files (item ids,
program codecs, signature); the `neighbors` and `by_history` blocks and the field checks live in manifest_terms.py,
re-exported here. The writer is export/bundle.py and the reader is runtime_py/bundle.py (`open_bundle`); nothing
else writes or reads a bundle, so a schema change is an edit in these modules (docs/bundle-format.md describes
the result).

`Manifest.to_json()` gives canonical bytes (sorted keys, no whitespace, ASCII), and those exact bytes are what
`manifest.sig` signs, so a manifest never needs re-serialising to be verified. `Manifest.from_json()` refuses
anything malformed, unknown or of another schema version with `BundleError`; building a `Manifest` in code with
bad values raises `ValueError` (export's input is wrong), as the other stage configs do.

Layout conventions the programs must follow (the runtime builds their inputs this way):
- hist_vecs (L, d) / hist_mask (L,): the user's last L recorded items in time order, aligned by `history_align`:
  "right" (sdk/model.py's binding layout: row L-1 = newest, zero padding first) or "left" (oldest in row 0,
  padding after).
- target_vecs (S, d) / target_mask (S,): the user's last S recorded items, same layout.
- neg_vecs (R, d): the rows of `negatives`, in order.
- trend (N,): log1p of the trending pack's counts (0 for items it does not list).
- exclude (N,): 1.0 for every item the user recorded.
- table (N, d), optional score input: the dequantized item table (one copy, shared with the runtime's rows).
- large catalogs (score `chunks` set, `item_table.program` = "score"): the table is a quantized constant of
  score.pte, which takes CHUNKED_SCORE_INPUTS plus one input per chunk, `t<c>` (1, n_c) = trend with -inf at the
  user's excluded items, items [chunks[c], chunks[c+1]); its COLUMNS_METHOD maps a user vector (1, d) to
  table . u + item bias (1, N), from which the runtime reads the table's rows (d + 1 calls at open). Such a
  program has no rank method, so a large bundle carries no `neighbors` (the item-item term).
- adaptation scene (`adapt_scene`): "query" (default; what the sdk's eager model does: adapt and score in the
  scene at `now`, so the runtime re-adapts when the scene changes) or "last_event" (the scene of the user's
  newest event: a head stays valid until the next event). The score program always gets the scene at `now`.
- adapt.pte (left out, with `programs.adapt`, when the bundle never adapts) holds one parameter (`delta`, (P,));
  each `forward_backward` + SGD(lr) is one Meta-SGD step on theta = theta0 + scale * delta (scale = sqrt of the step
  sizes, (P,)); the runtime reads the adapted head as theta0 + scale * delta. With `prepare_method` set, the program
  first runs that stateless method ONCE on the contract `inputs`; its outputs (`prepare_outputs`, which then include
  `scale`) feed the training method, whose inputs are `step_inputs` (names from `inputs` and `prepare_outputs`).
  Without it the training method takes `inputs` directly and outputs `scale` itself. With `unrolled_method` also
  set, that stateless method takes `step_inputs` and returns the adapted head theta (P,) after all `inner_steps`
  (the same steps, unrolled), so a runtime without the training extension (runtime_native/) adapts with a plain
  method call.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any

from .bundle_codecs import FLOAT_DTYPES, PROGRAM_CODECS, check_item_ids
from .table_codec import MIXED, SCALE_DTYPES, TABLE_FORMATS
from .errors import BundleError
from .manifest_terms import (MAX_LENGTHS, NEIGHBOR_KINDS, ONBOARDING_ROWS, HistoryWeights, NeighborSpec,  # noqa: F401
                             OnboardingSpec, at_length, onboarding_row, onboarding_weight,
                             check as _check, is_int as _is_int, is_number as _is_number)
from .scene import SceneSpec

# v2: every program entry records its codec (required); v1 let a missing one fall back to the exporter's config
SCHEMA_VERSION = 2

# files: the reader follows the manifest's fields; the writer names them so (model.onnx has no field)
MANIFEST_FILE, SIGNATURE_FILE = "manifest.json", "manifest.sig"
RESERVED_FILES = (MANIFEST_FILE, SIGNATURE_FILE)
SCORE_FILE, ADAPT_FILE, TABLE_FILE, HEAD_FILE, IDS_FILE, ONNX_FILE = (
    "score.pte", "adapt.pte", "items.bin", "head0.bin", "item_ids.bin", "model.onnx")
NEIGHBORS_FILE = "neighbors.bin"
POPULARITY_FILE = "popularity.bin"

# program methods and I/O names; tuples are in the order export traces the programs
SCORE_METHOD = "forward"
SCORE_INPUTS = ("head", "hist_vecs", "hist_mask", "scene", "trend", "exclude", "table")
SCORE_OPTIONAL_INPUTS = ("table",)  # a score program may instead hold the table as a constant
SCORE_OUTPUTS = ("topk_scores", "topk_ids")
SCORE_CACHE_OUTPUTS = ("user_vec", "offset")  # forward's extra outputs when score.pte has a rank method
RANK_METHOD = "rank"
RANK_INPUTS = ("user_vec", "offset", "table")  # score's optional rank method: from forward's outputs + the table
CHUNKED_SCORE_INPUTS = ("head", "hist_vecs", "hist_mask", "scene")  # + chunk_input_names(C): the large program
COLUMNS_METHOD = "columns"  # large program: (user_vec (1, d)) -> (columns (1, N)) = table . user_vec + item bias
TABLE_PROGRAMS = ("score",)  # item_table.program: the program holding the table as a constant


def chunk_input_names(n_chunks: int) -> tuple[str, ...]:
    """The large score program's per-chunk inputs t0, t1, ...: trend with -inf at excluded items, (1, n_c)."""
    return tuple(f"t{c}" for c in range(n_chunks))

ADAPT_METHOD = "forward"  # the training method
ADAPT_INPUTS = ("theta0", "hist_vecs", "hist_mask", "scene", "target_vecs", "target_mask", "neg_vecs")
ADAPT_OUTPUTS = ("loss",)  # and "scale", from the training method or from `prepare`
ADAPT_PARAMETER = "delta"
ADAPT_PREPARE_METHOD = "prepare"
ADAPT_PREPARE_OUTPUTS = ("packed", "scale")
ADAPT_STEP_INPUTS = ("packed",)
ADAPT_UNROLLED_METHOD = "adapt"  # stateless: step_inputs -> (theta,), for runtimes without a training extension

# a catalog delta's score program (runtime_py/catalog.py): the score contract's inputs, sized by the delta's n items,
# in this order, and every item's score (excluded items sunk by the kernel's EXCLUDED), not a top-k
DELTA_METHOD = "forward"
DELTA_INPUTS = SCORE_INPUTS
DELTA_OUTPUTS = ("scores",)

ADAPT_SCENES = ("query", "last_event")
HISTORY_ALIGNS = ("right", "left")
# Limits checked on the parsed manifest before anything is allocated from it: a phone bundle is far below them, and
# they keep the reader's peak allocation under ~256 MB whatever a (signed) manifest claims.
MAX_FILE_BYTES = 64 << 20  # one bundle file; the float32 table at MAX_TABLE_VALUES is exactly this
MAX_TABLE_VALUES = 1 << 24  # N * d of a table file: 10^6 items at d=16
MAX_PROGRAM_TABLE_VALUES = 1 << 25  # N * d of a table inside score.pte (the runtime's rows: 128 MiB float32 at most)
SHAPE_LIMITS = {"N": 1 << 22, "d": 1024, "L": 1024, "F": 256, "P": 1 << 22, "k_max": 1024, "S": 1024, "R": 4096}
MAX_SERIAL = 1 << 40  # a serial is an export's unix time or a counter; 2**63-1 would pin the rollback mark forever
MAX_SERIAL_AHEAD_SECONDS = 366 * 86400  # a serial may run ahead of the phone's clock by a year (clock skew), no more
_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")  # plain names only: no paths, no traversal
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def check_serial_plausible(serial: int, now: float) -> None:
    """ValueError if `serial` could pin the rollback mark: above MAX_SERIAL or over a year ahead of `now` when it
    looks like a unix time (serials below 10^9 are counters)."""
    _check(_is_int(serial) and 1 <= serial <= MAX_SERIAL, f"serial {serial!r} outside [1, {MAX_SERIAL}]")
    _check(serial < 1_000_000_000 or serial <= now + MAX_SERIAL_AHEAD_SECONDS,
           f"serial {serial} is a unix time more than a year after this device's clock ({now:.0f})")


@dataclasses.dataclass(frozen=True)
class FileEntry:
    """Size and sha256 (lowercase hex) of one bundle file."""

    sha256: str
    bytes: int

    def __post_init__(self) -> None:
        _check(isinstance(self.sha256, str) and bool(_HEX64.match(self.sha256)), "sha256 must be 64 lowercase hex")
        _check(_is_int(self.bytes) and 0 <= self.bytes <= MAX_FILE_BYTES, f"bytes must be an int in [0, {MAX_FILE_BYTES}]")


@dataclasses.dataclass(frozen=True)
class Shapes:
    """N items, d item dim, L history slots, F scene dim, P head size, k_max top-k capacity, S support targets,
    R negatives."""

    N: int
    d: int
    L: int
    F: int
    P: int
    k_max: int
    S: int
    R: int

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            hi = SHAPE_LIMITS[f.name]
            _check(_is_int(v) and 1 <= v <= hi, f"shapes.{f.name} must be an int in [1, {hi}], got {v!r}")
        _check(self.k_max <= self.N, f"k_max={self.k_max} > N={self.N}")
        _check(self.N * self.d <= MAX_PROGRAM_TABLE_VALUES, f"N*d={self.N * self.d} > {MAX_PROGRAM_TABLE_VALUES}")


@dataclasses.dataclass(frozen=True)
class ProgramIO:
    """Where a program lives and the order of its inputs/outputs, by contract name."""

    file: str
    method: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    codec: str  # how the file is stored (bundle_codecs.PROGRAM_CODECS); its sha256 covers the stored bytes
    parameters: tuple[str, ...] = ()  # training programs: the names returned by named_parameters()
    inner_steps: int = 0  # adapt only: forward_backward + SGD steps per adaptation (<= 3)
    lr: float = 0.0  # adapt only: the SGD rate that makes one step a Meta-SGD step (1.0 by the contract)
    prepare_method: str = ""  # adapt only: a stateless method run once per adaptation before the steps ("" = none)
    prepare_outputs: tuple[str, ...] = ()  # its outputs, by name
    step_inputs: tuple[str, ...] = ()  # the training method's inputs, from `inputs` and `prepare_outputs`
    # adapt only: a stateless method taking `step_inputs` and returning the adapted head theta (P,) after all
    # `inner_steps` (unrolled; "" = none): what a runtime without ExecuTorch's training extension runs
    unrolled_method: str = ""
    # score only: a method ranking from forward's cached outputs (user_vec, offset) and the table ("" = none);
    # it returns (topk_scores, topk_ids) in that order, the same as forward's while the user's head, history,
    # scene and trend pack are unchanged
    rank_method: str = ""
    rank_inputs: tuple[str, ...] = ()
    # score only, large catalogs: chunk edges [0, ..., N] (its inputs t<c> cover items [chunks[c], chunks[c+1]))
    # and the method reading the table back (COLUMNS_METHOD); both empty for the small program
    chunks: tuple[int, ...] = ()
    columns_method: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "chunks", tuple(self.chunks))
        _check(all(_is_int(c) for c in self.chunks), "chunks must be ints")
        _check(isinstance(self.columns_method, str), "columns_method must be a str")
        _check(bool(self.chunks) == bool(self.columns_method), "chunks and columns_method go together")
        if self.chunks:
            _check(len(self.chunks) >= 2 and self.chunks[0] == 0 and all(
                a < b for a, b in zip(self.chunks, self.chunks[1:])), "chunks must be increasing edges from 0")
            _check(not self.rank_method, "a chunked score program has no rank method")
            _check(self.columns_method not in (self.method, self.prepare_method), "columns_method needs its own name")
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "parameters", tuple(self.parameters))
        object.__setattr__(self, "prepare_outputs", tuple(self.prepare_outputs))
        object.__setattr__(self, "step_inputs", tuple(self.step_inputs))
        object.__setattr__(self, "rank_inputs", tuple(self.rank_inputs))
        _check(isinstance(self.rank_method, str), "rank_method must be a str")
        if self.rank_method:
            _check(self.rank_method != self.method, "rank_method must differ from method")
            _check(sorted(self.rank_inputs) == sorted(RANK_INPUTS), f"rank_inputs must be a permutation of "
                   f"{RANK_INPUTS}")
            _check({"user_vec", "offset"} <= set(self.outputs), "a rank method needs outputs user_vec and offset")
        else:
            _check(not self.rank_inputs, "rank_inputs need a rank_method")
        _check(isinstance(self.prepare_method, str), "prepare_method must be a str")
        if self.prepare_method:
            _check(self.prepare_method != self.method, "prepare_method must differ from method")
            _check(bool(self.prepare_outputs) and bool(self.step_inputs), "a prepare method needs prepare_outputs "
                   "and step_inputs")
            known = set(self.inputs) | set(self.prepare_outputs)
            _check(set(self.step_inputs) <= known, f"step_inputs {self.step_inputs} must come from inputs or "
                   f"prepare_outputs")
        else:
            _check(not self.prepare_outputs and not self.step_inputs,
                   "prepare_outputs/step_inputs need a prepare_method")
        _check(isinstance(self.unrolled_method, str), "unrolled_method must be a str")
        if self.unrolled_method:
            _check(bool(self.prepare_method) and self.unrolled_method not in (self.method, self.prepare_method),
                   "an unrolled_method needs a prepare_method and its own name")
        _check(isinstance(self.method, str) and bool(self.method), "program method must be a non-empty str")
        _check(self.codec in PROGRAM_CODECS, f"program codec {self.codec!r} unknown; known: {PROGRAM_CODECS}")
        _check(_is_int(self.inner_steps) and 0 <= self.inner_steps <= 3, "inner_steps must be in [0, 3]")
        _check(_is_number(self.lr) and math.isfinite(self.lr) and self.lr >= 0, "lr must be a number >= 0")
        _check(isinstance(self.file, str), "program file must be a str")
        for group in (self.inputs, self.outputs, self.parameters, self.prepare_outputs, self.step_inputs,
                      self.rank_inputs):
            _check(all(isinstance(n, str) and n for n in group), "program I/O names must be non-empty str")
            _check(len(set(group)) == len(group), f"duplicate program I/O names in {group}")


@dataclasses.dataclass(frozen=True)
class TableSpec:
    """The item table file: `format` in TABLE_FORMATS; `group_size` columns share one scale (int formats)."""

    file: str  # "" when the table lives in a program (`program`)
    format: str
    group_size: int = 0
    program: str = ""  # TABLE_PROGRAMS: the table is that program's quantized constant (large catalogs), no file
    scale_dtype: str = "float32"  # SCALE_DTYPES, int files only; left out of the JSON while float32

    def __post_init__(self) -> None:
        _check(self.format in TABLE_FORMATS, f"table format {self.format!r} unknown; known: {TABLE_FORMATS}")
        _check(isinstance(self.file, str) and isinstance(self.program, str), "item_table file/program must be str")
        _check(self.program in ("",) + TABLE_PROGRAMS, f"item_table.program {self.program!r} unknown")
        _check(bool(self.file) != bool(self.program), "item_table has a file or a program, exactly one")
        if self.format != "float32":
            _check(_is_int(self.group_size) and self.group_size >= 1, "int tables need group_size >= 1")
        _check(isinstance(self.scale_dtype, str) and self.scale_dtype in SCALE_DTYPES,
               f"item_table.scale_dtype {self.scale_dtype!r} unknown; known: {tuple(SCALE_DTYPES)}")
        _check(self.scale_dtype == "float32" or (self.format != "float32" and not self.program),
               "item_table.scale_dtype applies to an int table file only")
        _check(self.format != MIXED or not self.program, "a mixed table is a file, never a program's constant")


@dataclasses.dataclass(frozen=True)
class HeadSpec:
    """phi0, flat (P,) little-endian `dtype` (widened to float32 on read) in `file`, in `param_names` order with
    `param_shapes`."""

    file: str
    param_names: tuple[str, ...]
    param_shapes: tuple[tuple[int, ...], ...]
    dtype: str = "float32"  # FLOAT_DTYPES; left out of the JSON while float32

    def __post_init__(self) -> None:
        _check(isinstance(self.dtype, str) and self.dtype in FLOAT_DTYPES,
               f"head.dtype {self.dtype!r} unknown; known: {tuple(FLOAT_DTYPES)}")
        object.__setattr__(self, "param_names", tuple(self.param_names))
        object.__setattr__(self, "param_shapes", tuple(tuple(s) for s in self.param_shapes))
        _check(len(self.param_names) == len(self.param_shapes), "param_names and param_shapes differ in length")
        _check(all(all(_is_int(n) and n >= 1 for n in s) for s in self.param_shapes), "bad param_shapes")

    @property
    def size(self) -> int:
        return sum(math.prod(s) for s in self.param_shapes)


@dataclasses.dataclass(frozen=True)
class Manifest:
    """Everything the phone needs to trust and use a bundle. See the module docstring for the conventions."""

    model_version: str
    serial: int
    created_at: str  # ISO 8601 UTC
    shapes: Shapes
    negatives: tuple[int, ...]
    scene_spec: dict
    files: dict  # {name: FileEntry}
    programs: dict  # {"score": ProgramIO} and, when the phone adapts, "adapt": ProgramIO
    item_table: TableSpec
    head: HeadSpec
    # The catalog's ids in index order: inline, or (for catalogs of any size) in `item_ids_file`, a zlib stream of
    # the ids joined by "\n" (ML-100K: 10.7 KB inline vs 3.5 KB as a file; a manifest with 10^6 inline ids
    # would be ~8 MB of JSON parsed on every open). Exactly one of the two is used.
    item_ids: tuple[str, ...] = ()
    item_ids_file: str | None = None
    prototype_labels: tuple[str, ...] = ()
    prototypes_file: str | None = None  # (M, d) float32, M = len(prototype_labels); used for `because` at K=0
    trending_file: str | None = None  # an initial TrendingPack (JSON, covered by this manifest's hash)
    neighbors: NeighborSpec | None = None  # the item-item term, when export chose one on validation users
    by_history: HistoryWeights | None = None  # weights by history length, when export chose them
    onboarding: OnboardingSpec | None = None  # the onboarding term (its counts come in packs), when export chose it
    dtypes: dict = dataclasses.field(default_factory=dict)  # informational: {"table": "int8", "head": "float32"}
    configs: dict = dataclasses.field(default_factory=dict)  # every stage's config, opaque to the runtime
    adapt_scene: str = "query"
    history_align: str = "right"
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        _check(_is_int(self.schema_version) and self.schema_version == SCHEMA_VERSION,
               f"schema_version {self.schema_version!r} != {SCHEMA_VERSION}")
        _check(isinstance(self.model_version, str) and bool(self.model_version), "model_version must be a str")
        _check(_is_int(self.serial) and 1 <= self.serial <= MAX_SERIAL, f"serial must be an int in [1, {MAX_SERIAL}]")
        for name in ("item_ids", "negatives", "prototype_labels"):  # a str or dict would silently become a tuple
            _check(isinstance(getattr(self, name), (list, tuple)), f"{name} must be a list")
        _check(isinstance(self.created_at, str), "created_at must be an ISO 8601 str")
        object.__setattr__(self, "item_ids", tuple(self.item_ids))
        object.__setattr__(self, "negatives", tuple(self.negatives))
        object.__setattr__(self, "prototype_labels", tuple(self.prototype_labels))
        sh = self.shapes
        if self.item_ids_file is None:
            check_item_ids(self.item_ids, sh.N)
        else:
            _check(not self.item_ids, "give item_ids inline or in item_ids_file, not both")
        _check(len(self.negatives) == sh.R, f"{len(self.negatives)} negatives but R={sh.R}")
        _check(all(_is_int(i) and 0 <= i < sh.N for i in self.negatives), "negatives must be item indices")
        _check(all(isinstance(x, str) for x in self.prototype_labels), "prototype_labels must be str")
        spec = SceneSpec.from_dict(dict(self.scene_spec))
        _check(spec.dim == sh.F, f"scene dim {spec.dim} != F={sh.F}")
        _check(self.head.size == sh.P, f"head params hold {self.head.size} values but P={sh.P}")
        _check(self.adapt_scene in ADAPT_SCENES, f"adapt_scene {self.adapt_scene!r} unknown; known: {ADAPT_SCENES}")
        _check(self.history_align in HISTORY_ALIGNS,
               f"history_align {self.history_align!r} unknown; known: {HISTORY_ALIGNS}")
        files = {}
        for name, e in self.files.items():
            _check(isinstance(name, str) and bool(_FILE_NAME.match(name)), f"bad file name {name!r}")
            _check(name not in RESERVED_FILES, f"{name} cannot be listed in files")
            files[name] = e if isinstance(e, FileEntry) else FileEntry(**e)
        object.__setattr__(self, "files", files)
        _check(set(self.programs) in ({"score"}, {"score", "adapt"}), "programs must be 'score' and optionally 'adapt'")
        score = self.programs["score"]
        if score.chunks:  # the large-catalog program: the table inside it, one input per chunk
            _check(score.chunks[-1] == sh.N, f"score chunks must end at N={sh.N}")
            _check(all(b - a >= sh.k_max for a, b in zip(score.chunks, score.chunks[1:])),
                   f"every score chunk must hold at least k_max={sh.k_max} items")
            _check(self.item_table.program == "score", "a chunked score program holds the table (item_table.program)")
            _check(self.neighbors is None and self.by_history is None and self.onboarding is None,
                   "a chunked score program has no rank method to add the item-item term (neighbors), weights by "
                   "history length (by_history) or the onboarding term to")
            self._check_program(score, CHUNKED_SCORE_INPUTS + chunk_input_names(len(score.chunks) - 1),
                                SCORE_OUTPUTS)
        else:
            _check(not self.item_table.program, "the table can live in score.pte only for a chunked score program")
            _check(sh.N * sh.d <= MAX_TABLE_VALUES, f"N*d={sh.N * sh.d} > {MAX_TABLE_VALUES}")
            required = tuple(n for n in SCORE_INPUTS if n not in SCORE_OPTIONAL_INPUTS)
            self._check_program(score, required, SCORE_OUTPUTS, SCORE_OPTIONAL_INPUTS)
        _check(not self.programs["score"].prepare_method, "score has no prepare method")
        _check(not self.programs["score"].unrolled_method, "score has no unrolled method")
        adapt = self.programs.get("adapt")
        if adapt is not None:  # absent: the bundle never adapts (export leaves it out when no step pays)
            self._check_program(adapt, ADAPT_INPUTS, ADAPT_OUTPUTS)
            _check("scale" in adapt.outputs or "scale" in adapt.prepare_outputs,
                   "adapt must output `scale` (from its training method or its prepare method)")
            _check(not adapt.rank_method, "adapt has no rank method")
            _check(len(adapt.parameters) == 1, "adapt must hold exactly one parameter (delta)")
            _check(not adapt.chunks, "adapt has no chunks")
        if self.by_history is not None and self.by_history.term:
            _check(self.neighbors is not None, "by_history.term needs the item-item term (neighbors)")
        referenced = [self.item_table.file or None, self.head.file, self.prototypes_file, self.trending_file,
                      self.item_ids_file, self.neighbors.file if self.neighbors is not None else None,
                      self.by_history.file if self.by_history is not None else None]
        referenced = [n for n in referenced if n != ""]  # neighbors.file "": the table arrives in a pack
        for name in [p.file for p in self.programs.values()] + [n for n in referenced if n is not None]:
            _check(name in files, f"{name} is referenced but not listed in files")
        if self.prototypes_file is not None:
            _check(len(self.prototype_labels) >= 1, "prototypes_file needs prototype_labels")

    @property
    def inner_steps(self) -> int:
        """Adaptation steps per user: 0 when the bundle has no adapt program (or it runs none)."""
        adapt = self.programs.get("adapt")
        return 0 if adapt is None else int(adapt.inner_steps)

    @staticmethod
    def _check_program(p: ProgramIO, inputs: tuple, outputs: tuple, optional: tuple = ()) -> None:
        required = [n for n in p.inputs if n not in optional]
        _check(sorted(required) == sorted(inputs),
               f"program inputs {p.inputs} must be a permutation of {inputs} plus any of {optional}")
        _check(set(outputs) <= set(p.outputs), f"program outputs {p.outputs} must include {outputs}")

    def to_dict(self) -> dict:
        """The manifest as JSON-ready data. The large-catalog fields are left out while empty, so a small-catalog
        bundle's manifest is what it was before they existed (a runtime from before still reads it)."""
        d = dataclasses.asdict(self)
        for prog in d["programs"].values():
            for key in _LARGE_PROGRAM_FIELDS:
                if not prog[key]:
                    del prog[key]
        if not d["item_table"]["program"]:
            del d["item_table"]["program"]
        if d["item_table"]["scale_dtype"] == "float32":  # left out: older manifests stay byte-identical
            del d["item_table"]["scale_dtype"]
        if d["head"]["dtype"] == "float32":  # left out: older manifests stay byte-identical
            del d["head"]["dtype"]
        for key in ("by_history", "onboarding"):
            if d[key] is None:  # left out while unused: older manifests stay byte-identical
                del d[key]
        return d

    def to_json(self) -> bytes:
        """Canonical bytes: the exact bytes to write as manifest.json and to sign."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                          allow_nan=False).encode("ascii")

    @classmethod
    def from_dict(cls, d: dict) -> "Manifest":
        """Build from parsed JSON; `BundleError` for any missing, unknown or invalid field."""
        try:
            if not isinstance(d, dict):
                raise ValueError("manifest must be a JSON object")
            version = d.get("schema_version")
            if not _is_int(version) or version != SCHEMA_VERSION:
                raise BundleError(f"manifest schema_version {version!r} unsupported; this runtime reads "
                                  f"{SCHEMA_VERSION}")
            d = dict(d)
            _no_unknown(cls, d, "manifest")
            d["shapes"] = _sub(Shapes, d.get("shapes"), "shapes")
            d["item_table"] = _sub(TableSpec, d.get("item_table"), "item_table")
            d["head"] = _sub(HeadSpec, d.get("head"), "head")
            if d.get("neighbors") is not None:
                d["neighbors"] = _sub(NeighborSpec, d["neighbors"], "neighbors")
            if "by_history" in d:  # present means used: null is not canonical
                d["by_history"] = _sub(HistoryWeights, d["by_history"], "by_history")
            if "onboarding" in d:
                d["onboarding"] = _sub(OnboardingSpec, d["onboarding"], "onboarding")
            progs = d.get("programs")
            if not isinstance(progs, dict):
                raise ValueError("programs must be an object")
            d["programs"] = {k: _sub(ProgramIO, v, f"programs.{k}") for k, v in progs.items()}
            files = d.get("files")
            if not isinstance(files, dict):
                raise ValueError("files must be an object")
            d["files"] = {k: _sub(FileEntry, v, f"files.{k}") for k, v in files.items()}
            for key in ("scene_spec", "dtypes", "configs"):
                if key in d and not isinstance(d[key], dict):
                    raise ValueError(f"{key} must be an object")
            return cls(**d)
        except BundleError:
            raise
        except (ValueError, TypeError, KeyError, OverflowError) as e:  # OverflowError: 10**400 in a float field
            raise BundleError(f"invalid manifest: {e}") from e

    @classmethod
    def from_json(cls, data: bytes) -> "Manifest":
        """Parse manifest.json bytes; `BundleError` if they are not a valid manifest of SCHEMA_VERSION."""
        try:
            d = json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
        except (UnicodeDecodeError, json.JSONDecodeError, ValueError, RecursionError) as e:
            raise BundleError(f"manifest is not valid JSON: {type(e).__name__}: {e}") from e
        return cls.from_dict(d)


_LARGE_PROGRAM_FIELDS = ("chunks", "columns_method")  # ProgramIO fields omitted from the JSON while empty


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid in a manifest")


def _no_unknown(cls, d: dict, where: str) -> None:
    fields = dataclasses.fields(cls)
    known = {f.name for f in fields}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"unknown {where} fields {sorted(unknown)}; known: {sorted(known)}")
    required = {f.name for f in fields
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    missing = required - set(d)
    if missing:
        raise ValueError(f"missing {where} fields {sorted(missing)}")


def _sub(cls, d: Any, where: str):
    if not isinstance(d, dict):
        raise ValueError(f"{where} must be an object")
    _no_unknown(cls, d, where)
    return cls(**d)
