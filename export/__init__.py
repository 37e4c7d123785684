"""metarec.export: compress the meta-learned prior and export it as a signed bundle for the phone.

Named steps, each testable alone: compress (prune, quantize) -> programs (score.pte, adapt.pte) -> onnx ->
manifest -> sign. The CLI (bench/cli.py) calls `export_bundle`, `generate_keypair`, `compression_report`.
"""
from .config import CompressConfig, ExportConfig, parse_prune

__all__ = ["CompressConfig", "ExportConfig", "parse_prune", "export_bundle", "generate_keypair",
           "compression_report"]


def __getattr__(name):  # the heavy modules (executorch, torchao) load only when used
    if name in ("export_bundle", "generate_keypair"):
        from . import bundle
        return getattr(bundle, name)
    if name == "compression_report":
        from .report import compression_report
        return compression_report
    raise AttributeError(name)
