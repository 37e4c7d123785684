"""The runtime's typed errors: one base class, split by whose fault it is.

- `BundleError`: the bundle on disk is wrong (hash, signature, schema, rollback, malformed programs).
- `InputError`: the caller passed something invalid (unknown item, NaN timestamp, bad k, ...).
- `StateError`: the state database is unusable (corrupt, locked, closed, written by a newer schema).

Every public entry point raises only these, so an app can catch `MetaRecRuntimeError` once; lower-level
exceptions are chained (`raise ... from e`) for debugging, never leaked bare. `InputError` is also a `ValueError`,
so generic argument-checking handlers keep working.
"""
from __future__ import annotations


class MetaRecRuntimeError(Exception):
    """Base of every error `metarec.runtime` raises on purpose."""


class BundleError(MetaRecRuntimeError):
    """The bundle cannot be trusted or used: bad hash, signature, schema version, serial (rollback), content."""


class InputError(MetaRecRuntimeError, ValueError):
    """A caller-supplied argument is invalid; nothing was changed."""


class StateError(MetaRecRuntimeError):
    """The on-device state (SQLite) cannot be opened, read or written."""
