"""metarec.runtime: what a phone runs. Verified bundle, durable events, adaptation through ExecuTorch, top-k.

    from metarec.runtime import Recommender, TrendingPack
    rec = Recommender.open(bundle_dir, state_path, trusted_key=PUBLIC_KEY_PEM_PATH)

Imports numpy, executorch's runtime, cryptography, sqlite3 and the standard library only (torch only as the
tensor type ExecuTorch exchanges). The Recommender (and with it torch/executorch) is imported lazily, so tools that
only need the manifest schema, signing or the store start in milliseconds, not seconds.
"""
from __future__ import annotations

import importlib

from .errors import BundleError, InputError, MetaRecRuntimeError, StateError

# Everything else is imported on first use, so `metarec.runtime.store` (crash-test children, tools) starts without
# numpy, cryptography or torch.
_LAZY = {
    "SCHEMA_VERSION": ".manifest", "FileEntry": ".manifest", "HeadSpec": ".manifest", "Manifest": ".manifest",
    "ProgramIO": ".manifest", "Shapes": ".manifest", "TableSpec": ".manifest",
    "SceneClock": ".scene", "SceneSpec": ".scene", "scene_features": ".scene", "scene_labels": ".scene",
    "generate_keypair": ".bundle_codecs", "sign_manifest": ".bundle_codecs", "verify_signature": ".bundle_codecs",
    "decode_table": ".bundle_codecs", "encode_table": ".bundle_codecs", "TrendingPack": ".trending",
    "Recommender": ".recommender", "Recommendation": ".recommender", "Event": ".recommender",
    "Bundle": ".bundle", "open_bundle": ".bundle", "Store": ".store",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["BundleError", "InputError", "MetaRecRuntimeError", "StateError", *_LAZY]
