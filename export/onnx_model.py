"""model.onnx: score.pte's scorer for runtimes other than ExecuTorch (same inputs, same outputs, same math)."""
from __future__ import annotations

from pathlib import Path

import torch

from metarec.runtime.manifest import SCORE_INPUTS, SCORE_OUTPUTS

from .programs import ScoreModule, score_example_inputs


def export_onnx(model, table: torch.Tensor, k_max: int, path: str | Path, bias_dtype=torch.float32) -> Path:
    """Write the scorer as ONNX (torch.onnx dynamo exporter, opset 18)."""
    mod = ScoreModule(model, model.export_item_bias(), k_max, bias_dtype).eval()
    prog = torch.onnx.export(mod, score_example_inputs(model, table), dynamo=True, input_names=list(SCORE_INPUTS),
                             output_names=list(SCORE_OUTPUTS), opset_version=18, verbose=False)
    prog.save(str(path))
    return Path(path)
