"""metarec.runtime: what a phone runs. Verified bundle, durable events, adaptation through ExecuTorch, top-k.

Example (after `make demo`; README "Use it in an app" runs the same code in a test):

    from metarec.runtime import InputError, Recommender

    rec = Recommender.open("artifacts/bundle", "state.db", trusted_key="artifacts/keys/public.pem",
                           tz="Europe/Paris")         # device time zone: hours (5.5) or a zoneinfo name
    rec.record("alice", rec.item_ids[0], 1_700_000_000.0)      # durable when it returns
    for r in rec.recommend("alice", now=1_700_000_060.0, k=5):
        print(r.item_id, r.score, r.because_kind, r.because)   # because: an item id or a label, per because_kind
    rec.close()

Public API:
- `Recommender.open(bundle_dir, state_path, trusted_key, tz=None)`; `record(user, item, timestamp,
  event_id=None)`; `recommend(user, now, k=10, tz=None)` -> [`Recommendation`(item_id, score, because,
  because_kind)]; `set_trending(TrendingPack)`; `set_neighbors(NeighborPack)` (bundles with an item-item term;
  `neighbor_spec`); `set_onboarding(OnboardingPack)` (bundles with an onboarding term; `onboarding_spec`); `history(user)` -> [`Event`]; `forget(user)`; `close()`;
  `serial`; `item_ids`. A new bundle: close, then open the new folder with the same state path.
- `TrendingPack.from_counts(at, counts)`, `.save(path, private_key)` (server), `.load(path, trusted_key)` (phone);
  `NeighborPack(at, catalog, kind, ids, weights)` the same way (`metarec neighbors` writes one);
  `OnboardingPack.from_rows(at, rows, catalog)` too (`metarec onboarding` writes one).
- Errors, all `MetaRecRuntimeError`: `BundleError` (untrusted or unusable bundle or pack, older serial),
  `InputError` (a bad argument: unknown item, k out of range, bad time zone), `StateError` (state database).
- The bundle contract (docs/bundle-format.md): `open_bundle`, `Bundle`, `Manifest`, `Shapes`, `SceneSpec`, ...

Imports numpy, executorch's runtime, cryptography, sqlite3 and the standard library only (torch only as the
tensor type ExecuTorch exchanges). Submodules load on first use (`dir()` and `help()` list every name), so tools
that only need the manifest schema, signing or the store start in milliseconds, not seconds.
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
    "decode_table": ".table_codec", "encode_table": ".table_codec", "TrendingPack": ".trending",
    "NeighborPack": ".neighbors", "OnboardingPack": ".onboarding",
    "Recommender": ".recommender", "Recommendation": ".results", "Event": ".results",
    "Bundle": ".bundle", "open_bundle": ".bundle", "Store": ".store", "CatalogDelta": ".catalog",
}


def __dir__() -> list[str]:  # help() and dir() list the lazy names too (pydoc imports them on demand)
    return sorted(set(globals()) | set(_LAZY))


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["BundleError", "InputError", "MetaRecRuntimeError", "StateError", *_LAZY]
