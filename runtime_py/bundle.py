"""Open and verify a bundle directory: signature, schema version, every file's size and sha256, serial.

Order matters: the signature is checked over the raw manifest bytes before they are parsed, and each file is
hashed from the same bytes that are later used (programs are loaded from memory, not re-read from disk), so a
file swapped after verification is never executed. The serial is checked against the state's high-water mark
last, and the mark is only raised (by the caller) once everything else passed, so a forged or broken bundle
cannot poison it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
import time
from pathlib import Path

import numpy as np

from .bundle_codecs import decode_floats, decode_item_ids, decode_neighbors, decode_popularity, decode_program, \
    load_public_key, verify_signature
from .errors import BundleError
from .manifest import MANIFEST_FILE, MAX_FILE_BYTES, SIGNATURE_FILE, Manifest, check_serial_plausible
from .scene import SceneSpec
from .store import Store
from .table_codec import decode_table
from .trending import TrendingPack

_MAX_MANIFEST_BYTES = 16 << 20  # 10^6 inline ids fit (~8 MB); parsing more JSON than this could exhaust memory
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)  # O_NONBLOCK: a FIFO never blocks


@dataclasses.dataclass(frozen=True)
class Bundle:
    """A verified bundle, decoded: what the Recommender needs, with no further disk reads."""

    path: Path
    manifest: Manifest
    manifest_bytes: bytes
    item_ids: tuple[str, ...]  # index order (inline in the manifest or from its item_ids_file)
    scene_spec: SceneSpec
    table: np.ndarray | None  # (N, d) float32, dequantized once; None when score.pte holds it (item_table.program)
    head0: np.ndarray  # (P,) float32: phi0, the meta-learned initial head
    prototypes: np.ndarray | None  # (M, d) float32, for `because` when a user has no history
    programs: dict  # {"score": bytes[, "adapt": bytes]}: the verified program bytes, inflated
    trending: TrendingPack | None  # the pack shipped with the bundle, if any
    neighbors: tuple | None = None  # (ids (N, m) int64, weights (N, m) float32) of the item-item term, if shipped
    popularity: np.ndarray | None = None  # (N,) float32: the popularity feature of by_history, if shipped

    @property
    def serial(self) -> int:
        return self.manifest.serial

    def read_file(self, name: str) -> bytes:
        """The bytes of listed file `name` (e.g. model.onnx, which the phone never decodes), read again and
        checked against the verified manifest's sha256; `BundleError` if it is unlisted or changed."""
        entry = self.manifest.files.get(name)
        if entry is None:
            raise BundleError(f"{name} is not listed in the bundle's manifest")
        return _verified_file(self.path, name, entry)


def _read(root: Path, name: str, limit: int, expect: int | None = None) -> bytes:
    """The bytes of regular file `name` directly inside `root`, at most `limit` (and exactly `expect`) bytes.

    Opened relative to the folder with O_NOFOLLOW, so a symlink (inside or out) is refused rather than followed;
    the size is checked on the opened file itself (fstat), so a FIFO, device or file swapped in between is never
    read without bound."""
    try:
        dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise BundleError(f"cannot open bundle directory {root}: {e}") from e
    try:
        try:
            fd = os.open(name, _OPEN_FLAGS, dir_fd=dir_fd)
        except OSError as e:  # ELOOP: a symlink; ENOENT: missing
            raise BundleError(f"cannot open bundle file {name} (missing, or a symlink, which is refused): {e}") from e
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise BundleError(f"bundle file {name} is not a regular file")
            if st.st_size > limit or (expect is not None and st.st_size != expect):
                raise BundleError(f"bundle file {name} has {st.st_size} bytes, "
                                  f"{'manifest says ' + str(expect) if expect is not None else f'limit {limit}'}")
            chunks, total = [], 0
            while total <= limit:  # bounded even if the file grows while being read
                chunk = os.read(fd, min(1 << 20, limit + 1 - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
            data = b"".join(chunks)
        finally:
            os.close(fd)
    except OSError as e:
        raise BundleError(f"cannot read bundle file {name}: {e}") from e
    finally:
        os.close(dir_fd)
    if len(data) > limit or (expect is not None and len(data) != expect):
        raise BundleError(f"bundle file {name} changed size while being read")
    return data


def _verified_file(root: Path, name: str, entry) -> bytes:
    data = _read(root, name, MAX_FILE_BYTES, entry.bytes)  # size checked before reading
    if hashlib.sha256(data).hexdigest() != entry.sha256:
        raise BundleError(f"bundle file {name} does not match its sha256 in the manifest")
    return data


def _canonical(raw: bytes) -> bytes:
    try:
        return json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                          allow_nan=False).encode("ascii")
    except (ValueError, RecursionError):
        return b""


def open_bundle(bundle_dir: str | Path, trusted_key, store: Store | None = None) -> Bundle:
    """Verify and decode `bundle_dir`; `BundleError` on any failure. With `store`, refuse a serial older than the
    newest the store has accepted (rollback); the caller records the serial (`store.accept_serial`) once the
    bundle has proven usable.

    `trusted_key`: the Ed25519 public key (PEM bytes/text or a path to a PEM file).
    """
    root = Path(bundle_dir)
    if not root.is_dir():
        raise BundleError(f"bundle directory {root} does not exist")
    key = load_public_key(trusted_key)
    manifest_bytes = _read(root, MANIFEST_FILE, _MAX_MANIFEST_BYTES)
    verify_signature(manifest_bytes, _read(root, SIGNATURE_FILE, 1024), key)
    bundle = decode_bundle(root, manifest_bytes)
    if store is not None and bundle.serial < store.max_serial():
        raise BundleError(f"bundle serial {bundle.serial} is older than {store.max_serial()}, already seen "
                          "by this state (rollback)")
    return bundle


def decode_bundle(root: Path, manifest_bytes: bytes) -> Bundle:
    """Everything `open_bundle` does after the signature: parse and check the manifest, verify and decode every
    file. Only for bytes whose signature was checked, or (export's smoke run, runtime_py/probe.py) not yet made."""
    manifest = Manifest.from_json(manifest_bytes)
    try:  # a signed serial far in the future would refuse every later bundle forever (rollback mark)
        check_serial_plausible(manifest.serial, time.time())
    except ValueError as e:
        raise BundleError(str(e)) from e
    # Canonical form is part of the contract: a signed but non-canonical manifest means the writer is not ours.
    # (Re-encoded as parsed, not via Manifest: a manifest that omits fields with defaults is still canonical.)
    if _canonical(manifest_bytes) != manifest_bytes:
        raise BundleError("manifest.json is not in canonical form (sorted keys, compact, ASCII)")

    needed = {p.file for p in manifest.programs.values()}
    needed |= {n for n in (manifest.item_table.file, manifest.head.file) if n}
    needed |= {n for n in (manifest.prototypes_file, manifest.trending_file, manifest.item_ids_file) if n is not None}
    if manifest.neighbors is not None and manifest.neighbors.file:
        needed.add(manifest.neighbors.file)
    if manifest.by_history is not None and manifest.by_history.file:
        needed.add(manifest.by_history.file)
    data: dict[str, bytes] = {}
    for name, entry in sorted(manifest.files.items()):  # every listed file is verified, used or not
        blob = _verified_file(root, name, entry)
        if name in needed:
            data[name] = blob

    sh = manifest.shapes
    ts = manifest.item_table
    # a table inside score.pte is read back from the loaded program (runtime_py/programs.py, ChunkedScoreProgram)
    table = None if ts.program else decode_table(data[ts.file], sh.N, sh.d, ts.format, ts.group_size,
                                                 ts.scale_dtype)
    head0 = decode_floats(data[manifest.head.file], (sh.P,), manifest.head.file, manifest.head.dtype)
    prototypes = None
    if manifest.prototypes_file is not None:
        prototypes = decode_floats(data[manifest.prototypes_file], (len(manifest.prototype_labels), sh.d),
                                  manifest.prototypes_file)
    trending = TrendingPack.from_json(data[manifest.trending_file]) if manifest.trending_file else None
    item_ids = (decode_item_ids(data[manifest.item_ids_file], sh.N) if manifest.item_ids_file is not None
                else manifest.item_ids)
    nb = manifest.neighbors
    neighbors = decode_neighbors(data[nb.file], sh.N, nb.m, nb.file) if nb is not None and nb.file else None
    bh = manifest.by_history
    popularity = decode_popularity(data[bh.file], sh.N, bh.file) if bh is not None and bh.file else None
    return Bundle(path=root, manifest=manifest, manifest_bytes=manifest_bytes, item_ids=item_ids,
                  scene_spec=SceneSpec.from_dict(dict(manifest.scene_spec)), table=table, head0=head0,
                  prototypes=prototypes, trending=trending, neighbors=neighbors, popularity=popularity,
                  programs={k: decode_program(data[p.file], p.codec, p.file) for k, p in manifest.programs.items()})
