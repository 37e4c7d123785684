"""The bundle contract, part 2 of 2: every byte format inside a bundle, both directions, side by side.

Part 1, manifest.py, holds the schema and the names (files, methods, program I/O). This module holds how the
files' bytes are written and read: export/bundle.py is its only writer, runtime_py/bundle.py its only reader, so
encoder and decoder can never drift apart. Everything here is numpy, zlib and `cryptography`: no torch.

- Item table (`items.bin`): table_codec.py.
- Float arrays (`head0.bin`, `prototypes.bin`): float32 little-endian, row-major, no header; `head0.bin` may be
  IEEE half instead (`head.dtype` "float16"), widened to float32 on read.
- Item ids (`item_ids.bin`): one zlib stream of the ids joined by "\\n" (so an id never holds a newline).
- Programs (`score.pte`, `adapt.pte`): stored with the codec the manifest records per program; the sha256 covers
  the stored bytes. "zlib" (one zlib stream) exists because an ExecuTorch flatbuffer is mostly padding and repeated
  tensor metadata: a 52 KB training program deflates to 12 KB.
- Trending pack (`trending.json` in a bundle, or a signed file `<pack>` + `<pack>.sig` from the server): canonical
  JSON `{"at": unix seconds, "catalog": catalog_digest of the bundle's item ids, "counts": {item_id: count >= 0},
  "version": 2}`; version 1 (no catalog) is read only inside a bundle, whose manifest hash binds it.
- Catalog delta (a signed file `<delta>` + `<delta>.sig` from `metarec catalog add|retire`): canonical JSON
  `{"at", "bundle_serial", "catalog", "items": [id], "program": {"codec", "data": base64} | null, "retire": [id],
  "seq", "table": {"format", "group_size", "data": base64} | null, "version": 1}` (`encode_delta` /
  `decode_delta`); `table` holds the new items' rows in the item-table layout above, `program` their score
  program (the DELTA_* names of manifest.py).
- Signature (`manifest.sig`): the raw 64-byte Ed25519 signature over the exact manifest.json bytes (canonical
  JSON, never re-serialised). Keys are PEM: PKCS8 private, SubjectPublicKeyInfo public.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import zlib
from pathlib import Path

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import BundleError
from .table_codec import TABLE_FORMATS

# ---------------------------------------------------------------------------------------------- float arrays
FLOAT_DTYPES = {"float32": "<f4", "float16": "<f2"}  # a float file's stored dtype (head.dtype) -> numpy


def encode_floats(arr, dtype: str = "float32") -> bytes:
    """File bytes of a float array (head0.bin, prototypes.bin); a float16 file needs values that are halves."""
    a = np.asarray(arr, dtype=np.float32)
    with np.errstate(over="ignore"):  # an overflow is refused just below
        stored = a.astype(FLOAT_DTYPES[dtype])
    if not np.all(np.isfinite(stored)) or not np.array_equal(stored.astype(np.float32), a):
        raise ValueError(f"values are not finite and exactly representable as {dtype}")
    return stored.tobytes()


def decode_floats(data: bytes, shape: tuple[int, ...], name: str, dtype: str = "float32") -> np.ndarray:
    """A read-only float32 array of `shape` from `dtype` bytes; `BundleError` on a size mismatch or non-finite
    values."""
    if dtype not in FLOAT_DTYPES:
        raise BundleError(f"{name}: float dtype {dtype!r} unknown; known: {tuple(FLOAT_DTYPES)}")
    expected = int(np.prod(shape)) * np.dtype(FLOAT_DTYPES[dtype]).itemsize
    if len(data) != expected:
        raise BundleError(f"{name} has {len(data)} bytes, expected {expected} for {dtype} {shape}")
    arr = np.frombuffer(data, dtype=FLOAT_DTYPES[dtype]).reshape(shape).astype(np.float32)
    if not np.all(np.isfinite(arr)):
        raise BundleError(f"{name} holds non-finite values")
    arr.setflags(write=False)
    return arr


def encode_popularity(vec: np.ndarray) -> bytes:
    """popularity.bin (HistoryWeights.file): (N,) float16 little-endian."""
    return np.asarray(vec, np.float32).astype("<f2").tobytes()


def decode_popularity(data: bytes, n: int, name: str) -> np.ndarray:
    """A read-only (N,) float32 popularity feature; `BundleError` on a size mismatch or non-finite values."""
    if len(data) != 2 * n:
        raise BundleError(f"{name} has {len(data)} bytes, expected {2 * n} for float16 ({n},)")
    arr = np.frombuffer(data, dtype="<f2").astype(np.float32)
    if not np.all(np.isfinite(arr)):
        raise BundleError(f"{name} holds non-finite values")
    arr.setflags(write=False)
    return arr


# ---------------------------------------------------------------------------------------------- neighbours
def encode_neighbors(ids: np.ndarray, weights: np.ndarray) -> bytes:
    """neighbors.bin: (N, m) int32 indices (-1 = no neighbour) then (N, m) float16 weights, little-endian."""
    ids, weights = np.asarray(ids), np.asarray(weights)
    if ids.shape != weights.shape or ids.ndim != 2:
        raise ValueError("neighbour ids and weights must both be (N, m)")
    return ids.astype("<i4").tobytes() + weights.astype("<f2").tobytes()


def decode_neighbors(data: bytes, n: int, m: int, name: str = "neighbors.bin") -> tuple[np.ndarray, np.ndarray]:
    """(ids int64 (N, m), weights float32 (N, m)); BundleError on a size mismatch, an index outside the catalog
    or a non-finite / negative weight."""
    expected = n * m * 6
    if len(data) != expected:
        raise BundleError(f"{name} has {len(data)} bytes, expected {expected} for (N={n}, m={m})")
    ids = np.frombuffer(data, dtype="<i4", count=n * m).reshape(n, m).astype(np.int64)
    w = np.frombuffer(data, dtype="<f2", offset=n * m * 4).reshape(n, m).astype(np.float32)
    if ((ids < -1) | (ids >= n)).any():
        raise BundleError(f"{name} holds an item index outside [-1, {n})")
    if not np.all(np.isfinite(w)) or (w < 0).any():
        raise BundleError(f"{name} holds a non-finite or negative weight")
    w[ids < 0] = 0.0
    ids[ids < 0] = 0
    for a in (ids, w):
        a.setflags(write=False)
    return ids, w


# ---------------------------------------------------------------------------------------------- item ids
def check_item_ids(ids, n: int) -> None:
    """N unique, non-empty str ids without a newline (the file form's separator); ValueError otherwise."""
    if not all(isinstance(i, str) and i and "\n" not in i for i in ids):
        raise ValueError("item_ids must be non-empty str without \\n")
    if len(ids) != n:
        raise ValueError(f"{len(ids)} item_ids but N={n}")
    if len(set(ids)) != n:
        raise ValueError("item_ids are not unique")


def encode_item_ids(ids) -> bytes:
    """`item_ids_file` bytes for `ids` (index order)."""
    return zlib.compress("\n".join(ids).encode("utf-8"), 9)


def decode_item_ids(data: bytes, n: int) -> tuple[str, ...]:
    """The ids of a verified `item_ids_file`; BundleError if they do not decode to N unique ids."""
    try:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(data, min(64 * (n + 1) + 1024, 64 << 20))  # ids ~64 bytes on average at most
        if inflater.unconsumed_tail or not inflater.eof:
            raise ValueError("item_ids_file does not inflate to a complete, plausibly sized id list")
        ids = tuple(raw.decode("utf-8").split("\n"))
        check_item_ids(ids, n)
        return ids
    except (zlib.error, UnicodeDecodeError, ValueError) as e:
        raise BundleError(f"item_ids_file: {e}") from e


# ---------------------------------------------------------------------------------------------- program codecs
PROGRAM_CODECS = ("none", "zlib")
MAX_PROGRAM_BYTES = 64 << 20  # an inflated program larger than this is a zip bomb, not a phone model (~100 KB)
_PTE_MAGIC = b"ET"  # bytes 4..6 of every ExecuTorch flatbuffer ("ET12"...)


def encode_program(pte: bytes, codec: str) -> bytes:
    """Stored bytes of an ExecuTorch program under `codec` (the manifest records it per program)."""
    if codec == "none":
        return pte
    if codec == "zlib":
        return zlib.compress(pte, 9)
    raise ValueError(f"program codec {codec!r} unknown; known: {PROGRAM_CODECS}")


def decode_program(stored: bytes, codec: str, name: str = "program") -> bytes:
    """The program bytes ExecuTorch loads; `BundleError` unless they decode to an ExecuTorch flatbuffer.

    The magic check matters: ExecuTorch's pybinding aborts the whole process (not an exception) on some
    non-program bytes, so they never reach it."""
    data = stored
    if codec == "zlib":
        try:
            inflater = zlib.decompressobj()
            data = inflater.decompress(stored, MAX_PROGRAM_BYTES)
            if inflater.unconsumed_tail or not inflater.eof:
                raise BundleError(f"{name} does not inflate to a complete program under {MAX_PROGRAM_BYTES} bytes")
        except zlib.error as e:
            raise BundleError(f"{name} is not a zlib stream: {e}") from e
    elif codec != "none":
        raise BundleError(f"{name}: program codec {codec!r} unknown; known: {PROGRAM_CODECS}")
    if len(data) < 8 or data[4:6] != _PTE_MAGIC:
        raise BundleError(f"{name} is not an ExecuTorch program (codec {codec!r})")
    return data


# ---------------------------------------------------------------------------------------------- trending pack
PACK_VERSION = 2  # v2 added `catalog`: a pack is bound to the catalog it counts
PACK_MAX_AGE_SECONDS = 14 * 86400  # 7-day counts older than two weeks describe another week: refused as stale
PACK_MAX_AHEAD_SECONDS = 86400  # server/phone clock skew; a pack further in the future is forged or misdated
_MAX_PACK_BYTES = 32 << 20


def _load_json(data: bytes, limit: int, what: str):
    """Parsed JSON of untrusted bytes (a pack or a delta); ValueError when larger than `limit`, not UTF-8 JSON, with
    NaN / Infinity, or nested too deeply."""
    if len(data) > limit:
        raise ValueError(f"{what} larger than {limit} bytes")
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except RecursionError as e:  # deeply nested JSON
        raise ValueError(f"{what} nests too deeply") from e


def catalog_digest(item_ids) -> str:
    """What a pack is bound to: sha256 of the catalog's ids in index order, joined by "\n" (64 hex)."""
    return hashlib.sha256("\n".join(item_ids).encode("utf-8")).hexdigest()


def encode_pack(at: float, counts: dict, catalog: str) -> bytes:
    """Canonical pack bytes (sorted keys, compact, ASCII): what a pack's signature covers."""
    return json.dumps({"at": at, "catalog": catalog, "counts": counts, "version": PACK_VERSION}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")


def decode_pack(data: bytes, require_catalog: bool = True) -> tuple[float, dict, str]:
    """(at, counts, catalog) of pack bytes, shape-checked only (values: TrendingPack.from_counts); ValueError if
    malformed, of an unknown version, or (with `require_catalog`) not bound to a catalog."""
    d = _load_json(data, _MAX_PACK_BYTES, "trending pack")
    if not isinstance(d, dict) or d.get("version") not in (1, PACK_VERSION) or isinstance(d.get("version"), bool):
        raise ValueError(f"trending pack version {d.get('version') if isinstance(d, dict) else None!r} unsupported "
                         f"(this runtime reads {PACK_VERSION})")
    fields = {"at", "counts", "version"} | ({"catalog"} if d["version"] == PACK_VERSION else set())
    if set(d) != fields:
        raise ValueError(f"a version {d['version']} trending pack has exactly the fields {sorted(fields)}")
    catalog = d.get("catalog", "")
    if not isinstance(catalog, str) or (catalog and len(catalog) != 64) or (require_catalog and not catalog):
        raise ValueError("trending pack is not bound to a catalog (version 2 `catalog` field)")
    if not isinstance(d["counts"], dict):
        raise ValueError("trending pack counts must be an object")
    return d["at"], d["counts"], catalog


def check_pack_time(at: float, now: float, current_at: float | None, what: str = "trending pack") -> None:
    """ValueError unless a pack made at `at` is fresh at `now` and not older than the pack in use (a replay)."""
    if not math.isfinite(at) or at > now + PACK_MAX_AHEAD_SECONDS:
        raise ValueError(f"{what} time {at} is in the future of now={now}")
    if at < now - PACK_MAX_AGE_SECONDS:
        raise ValueError(f"{what} from {at} is stale at now={now} (older than {PACK_MAX_AGE_SECONDS} s)")
    if current_at is not None and at < current_at:
        raise ValueError(f"{what} from {at} is older than the pack in use ({current_at}): a replay")


ONBOARDING_PACK_VERSION = 1


def encode_onboarding(at: float, rows: list, catalog: str) -> bytes:
    """Canonical onboarding pack bytes (runtime_py/onboarding.py; sorted keys, compact, ASCII): what its signature
    covers."""
    return json.dumps({"at": at, "catalog": catalog, "kind": "onboarding", "rows": rows,
                       "version": ONBOARDING_PACK_VERSION}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True, allow_nan=False).encode("ascii")


def decode_onboarding(data: bytes, n_rows: int) -> tuple[float, list, str]:
    """(at, rows, catalog) of onboarding pack bytes, shape-checked only (each row's values: as a trending pack's
    counts); ValueError if malformed, of an unknown version, unbound or without exactly `n_rows` rows."""
    d = _load_json(data, _MAX_PACK_BYTES, "onboarding pack")
    if not isinstance(d, dict) or set(d) != {"at", "catalog", "kind", "rows", "version"}:
        raise ValueError("an onboarding pack has exactly the fields at, catalog, kind, rows, version")
    if d["version"] != ONBOARDING_PACK_VERSION or isinstance(d["version"], bool) or d["kind"] != "onboarding":
        raise ValueError(f"onboarding pack version {d['version']!r} / kind {d['kind']!r} unsupported (this runtime "
                         f"reads version {ONBOARDING_PACK_VERSION}, kind 'onboarding')")
    if not isinstance(d["catalog"], str) or len(d["catalog"]) != 64:
        raise ValueError("onboarding pack is not bound to a catalog (`catalog`: 64 hex)")
    rows = d["rows"]
    if not isinstance(rows, list) or len(rows) != n_rows or not all(isinstance(r, dict) for r in rows):
        raise ValueError(f"onboarding pack rows must be a list of {n_rows} objects")
    return d["at"], rows, d["catalog"]


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON here")


# ---------------------------------------------------------------------------------------------- catalog delta
DELTA_VERSION = 1
MAX_DELTA_BYTES = 64 << 20  # a delta file (base64 inside); one of a million d=16 float rows is ~85 MB: split it
MAX_DELTA_ITEMS = 1 << 16  # items added or retired by one delta
MAX_DELTA_ID_BYTES = 512  # validate.MAX_ID_BYTES: a delta item must be recordable
_DELTA_FIELDS = {"at", "bundle_serial", "catalog", "items", "program", "retire", "seq", "table", "version"}


def encode_delta(*, at: float, bundle_serial: int, catalog: str, seq: int, items, retire, table: bytes | None,
                 table_format: str = "", group_size: int = 0, program: bytes | None = None,
                 codec: str = "zlib", scale_dtype: str = "float32") -> bytes:
    """Canonical delta bytes (what its signature covers): `table` are the new items' rows in the item-table layout
    (`encode_table`), `program` their score program as ExecuTorch bytes (stored under `codec`)."""
    d = {"at": float(at), "bundle_serial": int(bundle_serial), "catalog": catalog, "items": list(items),
         "retire": list(retire), "seq": int(seq), "version": DELTA_VERSION, "table": None, "program": None}
    if table is not None:
        d["table"] = {"format": table_format, "group_size": int(group_size),
                      "data": base64.b64encode(table).decode("ascii")}
        if scale_dtype != "float32":  # left out while float32: older deltas stay byte-identical
            d["table"]["scale_dtype"] = scale_dtype
        d["program"] = {"codec": codec, "data": base64.b64encode(encode_program(program, codec)).decode("ascii")}
    out = json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")
    decode_delta(out)  # never write a delta the runtime would refuse
    return out


def decode_delta(data: bytes) -> dict:
    """The fields of delta bytes, shape- and type-checked, with `table` / `program` as raw bytes (the program
    inflated and magic-checked; the table is sized against the bundle by the runtime); ValueError if malformed."""
    d = _load_json(data, MAX_DELTA_BYTES, "catalog delta")
    if not isinstance(d, dict) or set(d) != _DELTA_FIELDS:
        raise ValueError(f"a catalog delta has exactly the fields {sorted(_DELTA_FIELDS)}")
    if d["version"] != DELTA_VERSION or isinstance(d["version"], bool):
        raise ValueError(f"catalog delta version {d['version']!r} unsupported (this runtime reads {DELTA_VERSION})")
    for k, hi in (("bundle_serial", 1 << 40), ("seq", 1 << 31)):
        if not isinstance(d[k], int) or isinstance(d[k], bool) or not 1 <= d[k] <= hi:
            raise ValueError(f"catalog delta {k} must be an int in [1, {hi}], got {d[k]!r}")
    if isinstance(d["at"], bool) or not isinstance(d["at"], (int, float)) or not math.isfinite(d["at"]):
        raise ValueError("catalog delta time must be a finite number")
    if not isinstance(d["catalog"], str) or len(d["catalog"]) != 64:
        raise ValueError("catalog delta is not bound to a catalog (64 hex `catalog`)")
    for k in ("items", "retire"):
        ids = d[k]
        if not isinstance(ids, list) or len(ids) > MAX_DELTA_ITEMS:
            raise ValueError(f"catalog delta {k} must be a list of at most {MAX_DELTA_ITEMS} ids")
        for i in ids:
            if not (isinstance(i, str) and i.strip() and "\n" not in i and "\0" not in i):
                raise ValueError(f"catalog delta {k}: id {str(i)[:40]!r} must be a non-empty str without newline/NUL")
            try:
                if len(i.encode("utf-8")) > MAX_DELTA_ID_BYTES:
                    raise ValueError(f"catalog delta {k}: id longer than {MAX_DELTA_ID_BYTES} UTF-8 bytes")
            except UnicodeEncodeError as e:
                raise ValueError(f"catalog delta {k}: id is not valid Unicode text") from e
        if len(set(ids)) != len(ids):
            raise ValueError(f"catalog delta {k} lists an id twice")
    if set(d["items"]) & set(d["retire"]):
        raise ValueError("catalog delta adds and retires the same id")
    if not d["items"] and not d["retire"]:
        raise ValueError("catalog delta neither adds nor retires an item")
    if bool(d["items"]) != (d["table"] is not None) or (d["table"] is None) != (d["program"] is None):
        raise ValueError("catalog delta: `table` and `program` are present exactly when it adds items")
    out = dict(d)
    if d["table"] is not None:
        t, p = d["table"], d["program"]
        if not isinstance(t, dict) or set(t) - {"scale_dtype"} != {"format", "group_size", "data"} \
                or t["format"] not in TABLE_FORMATS or not isinstance(t["group_size"], int) \
                or isinstance(t["group_size"], bool) or not isinstance(t["data"], str) \
                or ("scale_dtype" in t and t["scale_dtype"] != "float16"):  # float32 is written by leaving it out
            raise ValueError("catalog delta `table` must be {format, group_size, data[, scale_dtype: float16]}")
        if not isinstance(p, dict) or set(p) != {"codec", "data"} or p["codec"] not in PROGRAM_CODECS \
                or not isinstance(p["data"], str):
            raise ValueError("catalog delta `program` must be {codec, data}")
        try:
            out["table"] = base64.b64decode(t["data"], validate=True)
            stored = base64.b64decode(p["data"], validate=True)
        except (binascii.Error, ValueError) as e:
            raise ValueError(f"catalog delta payload is not base64: {e}") from e
        out["table_format"], out["group_size"] = t["format"], t["group_size"]
        out["scale_dtype"] = t.get("scale_dtype", "float32")
        try:
            out["program"] = decode_program(stored, p["codec"], "catalog delta program")
        except BundleError as e:
            raise ValueError(str(e)) from e
    return out


# ---------------------------------------------------------------------------------------------- signing
SIGNATURE_BYTES = 64


def generate_keypair() -> tuple[bytes, bytes]:
    """A fresh (private_pem, public_pem) pair, for tests and for export's key ceremony."""
    key = Ed25519PrivateKey.generate()
    priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return priv, pub


def _pem_bytes(pem: bytes | str | Path) -> bytes:
    """Accept PEM bytes, PEM text, or a path to a PEM file."""
    if isinstance(pem, bytes):
        return pem
    if isinstance(pem, str) and pem.lstrip().startswith("-----BEGIN"):
        return pem.encode("ascii")
    return Path(pem).read_bytes()


def sign_manifest(manifest_bytes: bytes, private_key_pem: bytes | str | Path) -> bytes:
    """Ed25519 signature (64 bytes) over `manifest_bytes`; write it as manifest.sig."""
    key = serialization.load_pem_private_key(_pem_bytes(private_key_pem), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the signing key must be an Ed25519 private key")
    return key.sign(manifest_bytes)


def load_public_key(public_key_pem: bytes | str | Path) -> Ed25519PublicKey:
    """Parse a trusted Ed25519 public key; `BundleError` if it is not one."""
    try:
        key = serialization.load_pem_public_key(_pem_bytes(public_key_pem))
    except (OSError, ValueError, TypeError) as e:
        raise BundleError(f"trusted key is not a readable PEM public key: {e}") from e
    if not isinstance(key, Ed25519PublicKey):
        raise BundleError("trusted key is not an Ed25519 public key")
    return key


def verify_signature(data: bytes, signature: bytes, public_key: Ed25519PublicKey | bytes | str | Path) -> None:
    """Raise `BundleError` unless `signature` is a valid Ed25519 signature of `data` by `public_key`."""
    key = public_key if isinstance(public_key, Ed25519PublicKey) else load_public_key(public_key)
    if len(signature) != SIGNATURE_BYTES:
        raise BundleError(f"signature has {len(signature)} bytes, expected {SIGNATURE_BYTES}")
    try:
        key.verify(signature, data)
    except InvalidSignature as e:
        raise BundleError("signature does not verify with the trusted key") from e
