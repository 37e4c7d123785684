"""Lowering to ExecuTorch, written once: torch.export programs -> XNNPACK partition -> .pte bytes.

Every program the project builds (score.pte, adapt.pte, the benchmarks' scorers, the tests' tiny bundles) goes
through `lower`, so a change of ExecuTorch's lowering API is one edit.
"""
from __future__ import annotations

from typing import Callable


def score_partitioner():
    """XNNPACK, with fp32 Linears whose weight is a runtime value delegated too (its dynamic fully-connected): the
    table product `F.linear(z, table)` and the head/history products join the one delegate call
    (docs/decisions/delegable-kernel.md)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    return XnnpackPartitioner(force_non_static_weights_for_f32_linear=True)


def stock_partitioner():
    """XNNPACK as shipped (Linears with constant weights only)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    return XnnpackPartitioner()


PARTITIONERS = {"score": score_partitioner, "xnnpack": stock_partitioner, "portable": lambda: None}


def lower(programs, partitioner: str | dict = "score", plan_inputs: bool = True,
          edit: Callable[[object], None] | None = None) -> bytes:
    """.pte bytes of one `torch.export` program or a {method: program} dict.

    `partitioner`: "score", "xnnpack" or "portable" for every method, or a {method: name} dict. `plan_inputs=False`
    leaves graph inputs out of the memory plan, so a method binds the caller's buffers instead of copying them in
    on every execute (the (N, d) table: 49 -> 34 us for linear + top-k on ML-100K). `edit(edge)` may rewrite the
    edge programs before serialisation (adapt.pte's step folding)."""
    from executorch.exir import ExecutorchBackendConfig, to_edge_transform_and_lower
    from executorch.exir.passes import MemoryPlanningPass

    if not isinstance(programs, dict):
        programs = {"forward": programs}
    names = partitioner if isinstance(partitioner, dict) else {m: partitioner for m in programs}
    unknown = {v for v in names.values()} - set(PARTITIONERS)
    if unknown:
        raise ValueError(f"unknown partitioner {sorted(unknown)}; known: {sorted(PARTITIONERS)}")
    parts = {m: [p] if (p := PARTITIONERS[names[m]]()) is not None else [] for m in programs}
    edge = to_edge_transform_and_lower(programs, partitioner=parts)
    if edit is not None:
        edit(edge)
    cfg = ExecutorchBackendConfig(memory_planning_pass=MemoryPlanningPass(alloc_graph_input=plan_inputs))
    return edge.to_executorch(cfg).buffer
