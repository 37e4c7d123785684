"""Measure the design choice of programs.py on a checkpoint: where the item table lives (1 thread, p50).

    python -m metarec.export.measure CKPT [--quant int4] [--runs 500]

Variants of the same scorer: `input` (the shipped design: the runtime's dequantized table is an input) and
`constant` (torchao 8da4w / 8da8w table baked into score.pte as a quantized Linear, lowered to XNNPACK); plus
ONNX Runtime on model.onnx and the training program's step. Prints a JSON dict.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from .bundle import load_model
from .compress import quantize_table
from .lower import lower
from .programs import ScoreModule, score_example_inputs


class ConstantTableScore(ScoreModule):
    """The alternative: the table as a (torchao-quantized) Linear constant, inputs without `table`."""

    def __init__(self, model, k_max: int, quant: str):
        super().__init__(model, model.export_item_bias(), k_max)
        n, d = model.n_items, model.cfg.dim
        self.items = torch.nn.Linear(d, n, bias=False)
        with torch.no_grad():
            self.items.weight.copy_(model.export_item_table())
        if quant != "none":
            from torchao.quantization import Int8DynamicActivationIntxWeightConfig, PerAxis, PerGroup, quantize_

            quantize_(self, Int8DynamicActivationIntxWeightConfig(
                weight_dtype=torch.int4 if quant == "int4" else torch.int8,
                weight_granularity=PerGroup(32) if quant == "int4" else PerAxis(0)), filter_fn=lambda m, f: f == "items")

    def forward(self, head, hist_vecs, hist_mask, scene, trend, exclude):
        z, sc = self.user_vector(head, hist_vecs, hist_mask, scene)
        v, i = torch.topk(self.items(z).reshape(-1) + self.offset(sc, trend, exclude, hist_mask), self.k_max)
        return v, i


def _p50(fn, runs: int) -> float:
    for _ in range(min(50, runs)):
        fn()
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts) * 1e6)


def _lower(mod, inputs) -> bytes:
    return lower(torch.export.export(mod.eval(), inputs, strict=False), "score", plan_inputs=False)


def measure(checkpoint, quant: str = "int4", k_max: int = 100, runs: int = 500) -> dict:
    from executorch.runtime import Runtime

    torch.set_num_threads(1)
    model, _, _ = load_model(checkpoint)
    qt = quantize_table(model.export_item_table(), quant, 32)
    table = torch.from_numpy(np.array(qt.dequantized))
    inputs = score_example_inputs(model, table)
    out = {"N": model.n_items, "d": model.cfg.dim, "quant": quant, "threads": 1, "runs": runs}
    keep = []
    for name, mod, args in (("input", ScoreModule(model, model.export_item_bias(), k_max), inputs),
                            ("constant", ConstantTableScore(model, k_max, quant), inputs[:6])):
        data = _lower(mod, args)
        keep.append(data)
        program = Runtime.get().load_program(data)
        keep.append(program)  # the method reads the program: keep it alive as long as the method
        method = program.load_method("forward")
        lst = list(args)
        out[name] = {"pte_bytes": len(data), "p50_us": _p50(lambda: method.execute(lst), runs)}
    try:
        import tempfile

        import onnxruntime as ort

        from .onnx_model import export_onnx

        with tempfile.TemporaryDirectory() as tmp:
            p = export_onnx(model, table, k_max, f"{tmp}/m.onnx")
            so = ort.SessionOptions()
            so.intra_op_num_threads = so.inter_op_num_threads = 1
            sess = ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
            names = [i.name for i in sess.get_inputs()]
            feed = {n: x.numpy() for n, x in zip(names, inputs)}
            out["onnxruntime_input"] = {"p50_us": _p50(lambda: sess.run(None, feed), runs)}
    except ModuleNotFoundError as e:
        out["onnxruntime_input"] = {"error": str(e)}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m metarec.export.measure")
    p.add_argument("checkpoint")
    p.add_argument("--quant", default="int4", choices=["none", "int8", "int4"])
    p.add_argument("--runs", type=int, default=500)
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    print(json.dumps(measure(a.checkpoint, a.quant, runs=a.runs), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
