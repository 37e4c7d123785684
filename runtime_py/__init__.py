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
from .manifest import SCHEMA_VERSION, FileEntry, HeadSpec, Manifest, ProgramIO, Shapes, TableSpec
from .scene import SceneClock, SceneSpec, scene_features, scene_labels
from .signing import generate_keypair, sign_manifest, verify_signature
from .table import decode_table, encode_table
from .trending import TrendingPack

_LAZY = {"Recommender": ".recommender", "Recommendation": ".recommender", "Event": ".recommender",
         "Bundle": ".bundle", "open_bundle": ".bundle", "Store": ".store"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BundleError", "InputError", "MetaRecRuntimeError", "StateError",
    "SCHEMA_VERSION", "FileEntry", "HeadSpec", "Manifest", "ProgramIO", "Shapes", "TableSpec",
    "SceneClock", "SceneSpec", "scene_features", "scene_labels",
    "generate_keypair", "sign_manifest", "verify_signature", "decode_table", "encode_table", "TrendingPack",
    *_LAZY,
]
