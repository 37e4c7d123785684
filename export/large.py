"""The large-catalog score.pte: the item table quantized inside the program, scored in chunks (ExportConfig
`large_catalog_items` picks it from the catalog size; bench/results/scaling.md measured the design).

Why: score.pte's small-catalog form takes the fp32 table as an input, and XNNPACK re-packs that whole table on every
call (4.3-5.1x the memory-bandwidth bound at 1M items). Here the table is a torchao-quantized program constant,
packed once at load, and every per-item byte is streamed once per call:
- the item bias is the table Linear's bias (added in the GEMV's output stage);
- trend and exclusion are ONE per-item input t (trend with -inf at the user's excluded items, written by the
  runtime), multiplied by the kernel's trend gain (`kernel.trend_gains`: an id-less item takes the new-item gain,
  from a constant mask kept only for chunks that hold new items); the gains are clamped at 1e-30 so an excluded
  item's gain * -inf is -inf, never NaN;
- the catalog is split in chunks (`chunk_bounds`), each scored, reduced by a max tree and top-k'd while its scores
  sit in L2, and the chunks' candidates merged (`chained_topk`: exact);
- a second method, `columns` (COLUMNS_METHOD), returns table . u + bias for a user vector u: the runtime reads the
  table's rows from the program itself with d + 1 calls at open (history, negatives and `because` need rows), so
  the table exists once in the bundle. Both methods share the same constants (ExecuTorch stores them once).
The user vector and gains come from sdk/kernel.py, as in the small program; lowering is export/lower.py's.
"""
from __future__ import annotations

import torch
from torch import nn

from metarec.runtime.manifest import COLUMNS_METHOD, chunk_input_names
from metarec.sdk import kernel

from .errors import ExportError
from .lower import lower

DEFAULT_CHUNK = 262_144  # items per chunk: 1 MiB of fp32 scores, what this machine's 1 MiB L2 per core holds
GAIN_FLOOR = 1e-30  # the trend gains' clamp: gain * -inf stays -inf (softplus underflows to 0 below about -104)
XNNPACK_INT4_GROUP = 32  # XNNPACK's blockwise int4 weights need groups of 32 columns


def table_format(quant: str, d: int) -> tuple[str, int]:
    """(format, group_size) of the program's table for CompressConfig.quant: int8 one scale per row; int4 groups of
    32 columns (XNNPACK's rule), so a table narrower than 32 or not a multiple of it falls back to int8 per row."""
    if quant == "none":
        return "float32", 0
    if quant == "int4" and d % XNNPACK_INT4_GROUP == 0:
        return "int4", XNNPACK_INT4_GROUP
    if quant not in ("int4", "int8"):
        raise ExportError(f"quant {quant!r} unknown for the large-catalog program")
    return "int8", d


def quantize_table(mod: nn.Module, fmt: str, prefix: str = "tables.") -> None:
    """torchao weight quantization (8-bit dynamic activations; int8 weights per row or int4 in groups of 32) of every
    Linear whose name starts with `prefix`."""
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig as Cfg
    from torchao.quantization import quantize_
    from torchao.quantization.granularity import PerAxis, PerGroup

    if fmt == "float32":
        return
    cfg = (Cfg(weight_dtype=torch.int8, weight_granularity=PerAxis(0)) if fmt == "int8" else
           Cfg(weight_dtype=torch.int4, weight_granularity=PerGroup(XNNPACK_INT4_GROUP)))
    quantize_(mod, cfg, filter_fn=lambda m, fqn: fqn.startswith(prefix))


def chunk_bounds(n_items: int, chunk: int, k: int) -> list[int]:
    """Chunk edges [0, chunk, 2 chunk, ..., n_items]; a last chunk with fewer than k items joins the one before."""
    if chunk < k:
        raise ValueError(f"chunk {chunk} must hold at least k={k} items")
    edges = list(range(0, n_items, chunk)) + [n_items]
    if len(edges) > 2 and edges[-1] - edges[-2] < k:
        del edges[-2]
    return edges


def tree_levels(n: int, k: int) -> int:
    """Halvings of the max tree: while the length is even and the half still leaves >= 64 k candidates."""
    lv = 0
    while n % 2 == 0 and n // 2 >= 64 * k:
        n //= 2
        lv += 1
    return lv


def max_tree(x, levels: int):
    """`levels` halvings of the last dim by `maximum` of its two halves (XNNPACK: two static slices + maximum)."""
    for _ in range(levels):
        h = x.shape[-1] // 2
        x = torch.maximum(x[..., :h], x[..., h:])
    return x


def tree_topk(scores, k: int):
    """Exact top-k in two stages. Stage 1: `maximum` of the two halves, repeated (XNNPACK element-wise ops; each
    level reads its input once and halves it), gives M column maxima of the (N / M, M) row-major view, column j =
    items {j, j + M, j + 2M, ...}. Stage 2: the k best columns hold every top-k item (an item outside them is beaten
    by k column maxima), so a top-k over the M maxima, then over the k columns' N / M * k items, returns the flat
    top-k's items (up to ties). At 1M items (1 thread): flat portable top-k ~2.0 ms, this ~0.5 ms."""
    n = scores.shape[0]
    lv = tree_levels(n, k)
    if lv == 0:
        v, i = torch.topk(scores, k)
        return v, i
    x = max_tree(scores, lv)
    m = x.shape[0]
    _, cols = torch.topk(x, k)
    cand = scores.reshape(n // m, m).index_select(1, cols)  # (rows, k)
    v, j = torch.topk(cand.reshape(-1), k)
    return v, torch.div(j, k, rounding_mode="floor") * m + cols.index_select(0, torch.remainder(j, k))


def chained_topk(tables, rowbase, u, terms, k: int, gains=None, stage: str = "full"):
    """Exact top-k over the catalog split in chunks, each chunk scored and reduced while its scores sit in L2.

    Chunk c: y = table_c(u) + gains[c] * terms[c] (or + terms[c], a kept offset, when `gains` is None), all
    (1, n_c); the max tree of `tree_topk` over y's halves to m column maxima; a portable top-k of those; the chunk's
    k best columns gathered (n_c / m rows each). The global top-k is the top-k of the chunks' candidates (every
    global top-k item is among its chunk's top k).
    Why chunks: one big GEMV writes N scores that the add and the max tree then re-read from DRAM (N = 1M: 4 MB of
    fp32 after the table stream). The next chunk's GEMV input depends on this chunk's portable top-k (`dep`, always
    0: clamp keeps a -inf of an all-excluded chunk from making 0 * inf = NaN), so the XNNPACK partitioner cannot
    merge the chunks into one delegate call: the calls run in chunk order and the memory plan reuses one chunk's
    score buffer, which stays in L2 from its GEMV to its gather.
    `stage` cuts the graph for the benchmarks' profile: "linear" (GEMVs only), "tree" (+ terms + max trees)."""
    vals, ids, heads = [], [], []
    uu = u
    dep = None
    for c, lin in enumerate(tables):
        y = lin(uu)
        if stage == "linear":
            heads.append(y[:, :1])
            continue
        if gains is None:
            y = y + terms[c]
        else:
            y = y + (gains[c] if dep is None else gains[c] + dep) * terms[c]
        x = max_tree(y, tree_levels(y.shape[1], k))
        if stage == "tree":
            heads.append(x[:, :1])
            continue
        m = x.shape[1]
        tv, cols = torch.topk(x, k)  # (1, k)
        vals.append(y.reshape(-1, m).index_select(1, cols[0]).reshape(-1))
        ids.append((rowbase[c] + cols).reshape(-1))
        dep = tv[:, :1].clamp(-1.0, 1.0) * 0.0
        uu = u + dep
    if stage != "full":
        return (torch.cat(heads, 1),)
    v, j = torch.topk(torch.cat(vals), k)
    return v, torch.cat(ids).index_select(0, j)


class ChunkedTables(nn.Module):
    """The table in chunks: one Linear per chunk (weight = its rows, bias = their item biases) and the row bases
    of each chunk's max-tree columns."""

    def __init__(self, table: torch.Tensor, bias: torch.Tensor, edges: list[int], k: int):
        super().__init__()
        self.edges = list(edges)
        self.tables = nn.ModuleList()
        for c, (a, e) in enumerate(zip(edges[:-1], edges[1:])):
            lin = nn.Linear(table.shape[1], e - a, bias=True)
            with torch.no_grad():
                lin.weight.copy_(table[a:e])
                lin.bias.copy_(bias[a:e])
            self.tables.append(lin)
            m = (e - a) >> tree_levels(e - a, k)
            self.register_buffer(f"rowbase{c}", (a + torch.arange((e - a) // m) * m)[:, None])

    @property
    def n_chunks(self) -> int:
        return len(self.tables)

    def rowbase(self) -> list:
        return [getattr(self, f"rowbase{c}") for c in range(self.n_chunks)]


class ChunkedScoreModule(nn.Module):
    """score.pte's forward for large catalogs: (head, hist_vecs, hist_mask, scene, t_0 .. t_{C-1}) -> (topk_scores,
    topk_ids), scores = z . v_i + bias_i + gain_i(scene, K) * t_i, t = trend with -inf at excluded items, in
    chunks `edges` (t_c is (1, n_c), a view of the runtime's one t buffer)."""

    def __init__(self, model, k_max: int, edges: list[int], tables: ChunkedTables, stage: str = "full"):
        super().__init__()
        from .programs import KernelConstants, check_lowerable, head_layout

        check_lowerable(model.cfg)
        per_item = kernel.per_item_trend(model.cfg)
        if per_item:
            raise ExportError(f"the large-catalog program scores the trend as one gain per item kind; {per_item} "
                              "need per-item terms: export with a higher --large-catalog-items")
        if stage not in ("linear", "tree", "full"):
            raise ValueError(f"stage {stage!r} unknown; known: linear, tree, full")
        self.cfg, self.k_max, self.stage = model.cfg, k_max, stage
        self.shapes = dict(zip(*head_layout(model)))
        self.k = KernelConstants(model, catalog=False)
        self.chunks = tables
        self.new_offset = float(model.cfg.new_trend_offset)
        new = (1.0 - model.item_known).detach().to(torch.float32)
        self.new_chunks = []  # chunk index -> has a (1, n_c) new-item mask buffer
        for c, (a, e) in enumerate(zip(edges[:-1], edges[1:])):
            has = bool(model.cfg.new_item_terms and model.cfg.use_trend and (new[a:e] > 0).any())
            self.new_chunks.append(has)
            self.register_buffer(f"new{c}", new[a:e].reshape(1, -1).clone() if has else None)

    def gains(self, scene, hist_mask) -> list:
        """Per chunk: the trend gain, (1, 1), or (1, n_c) where the chunk holds id-less items."""
        w = self.k.weights()
        s = kernel.scene_encoding(self.cfg, w, scene.reshape(1, -1))
        seen, new = kernel.trend_gains(self.cfg, w, s, hist_mask.reshape(1, -1), self.new_offset, serving=True)
        seen, new = seen.reshape(1, 1).clamp_min(GAIN_FLOOR), new.reshape(1, 1).clamp_min(GAIN_FLOOR)
        return [seen + (new - seen) * getattr(self, f"new{c}") if has else seen
                for c, has in enumerate(self.new_chunks)]

    def user_vector(self, head, hist_vecs, hist_mask, scene):
        z, _ = kernel.user_vector(self.cfg, self.k.weights(), kernel.unflatten_head(head, self.shapes), hist_vecs,
                                  hist_mask.reshape(1, -1), scene.reshape(1, -1))
        return z

    def forward(self, head, hist_vecs, hist_mask, scene, *t):
        u = self.user_vector(head, hist_vecs, hist_mask, scene)
        return chained_topk(self.chunks.tables, self.chunks.rowbase(), u, t, self.k_max,
                            gains=self.gains(scene, hist_mask), stage=self.stage)


class ColumnsModule(nn.Module):
    """score.pte's COLUMNS_METHOD: (user_vec (1, d)) -> table . user_vec + bias, (1, N), over the same chunks."""

    def __init__(self, tables: ChunkedTables):
        super().__init__()
        self.chunks = tables

    def forward(self, user_vec):
        return (torch.cat([lin(user_vec) for lin in self.chunks.tables], 1),)


def build_chunked(model, k_max: int, quant: str, chunk: int = DEFAULT_CHUNK, stage: str = "full"):
    """(forward module, columns module, edges, (format, group_size)): the eager large-catalog scorer, its table
    quantized as the program will hold it."""
    n = model.n_items
    if not 1 <= k_max <= n:
        raise ValueError(f"k_max={k_max} must be in [1, N={n}]")
    fmt = table_format(quant, model.cfg.dim)
    edges = chunk_bounds(n, chunk, k_max)
    with torch.no_grad():
        tables = ChunkedTables(model.export_item_table().detach(), model.export_item_bias().detach(), edges, k_max)
    quantize_table(tables, fmt[0], prefix="tables.")
    fwd = ChunkedScoreModule(model, k_max, edges, tables, stage).eval()
    return fwd, ColumnsModule(tables).eval(), edges, fmt


def chunked_example_inputs(model, edges: list[int], seed: int = 0) -> tuple:
    """(head, hist_vecs, hist_mask, scene, t_0, ...): 3 history items, the first 3 items excluded, trend log1p."""
    from metarec.sdk.model import SCENE_DIM

    g = torch.Generator().manual_seed(seed)
    n, L, d = model.n_items, model.cfg.hist_len, model.cfg.dim
    head = torch.cat([model.head_init()[k].detach().reshape(-1) for k in model.head_param_names])
    hist = torch.randn(L, d, generator=g) * 0.1
    mask = torch.zeros(L)
    mask[-3:] = 1.0
    hist = hist * mask[:, None]
    scene = torch.zeros(SCENE_DIM)
    scene[0], scene[1], scene[3], scene[8] = 0.5, -0.86, 1.0, 1.0
    t = torch.log1p(torch.randint(0, 20, (n,), generator=g).float())
    t[:3] = float("-inf")
    return (head, hist, mask, scene, *(t[None, a:e] for a, e in zip(edges[:-1], edges[1:])))


def export_chunked_score_program(model, k_max: int, quant: str, chunk: int = DEFAULT_CHUNK):
    """(score.pte bytes, chunk edges, (table format, group size)) of the large-catalog program: `forward` and
    COLUMNS_METHOD over one copy of the quantized table."""
    fwd, cols, edges, fmt = build_chunked(model, k_max, quant, chunk)
    ex = chunked_example_inputs(model, edges)
    with torch.no_grad():
        eps = {"forward": torch.export.export(fwd, ex, strict=False),
               COLUMNS_METHOD: torch.export.export(cols, (torch.zeros(1, model.cfg.dim),), strict=False)}
    assert len(ex) - 4 == len(chunk_input_names(len(edges) - 1))
    return lower(eps, "xnnpack", plan_inputs=False), edges, fmt
