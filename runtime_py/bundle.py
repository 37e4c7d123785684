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
from pathlib import Path

import numpy as np

from .bundle_codecs import decode_floats, decode_item_ids, decode_program, decode_table, load_public_key, \
    verify_signature
from .errors import BundleError
from .manifest import MANIFEST_FILE, SIGNATURE_FILE, Manifest
from .scene import SceneSpec
from .store import Store
from .trending import TrendingPack

_MAX_MANIFEST_BYTES = 64 << 20  # an item-id list of 10^6 ids fits; anything bigger is not a manifest


@dataclasses.dataclass(frozen=True)
class Bundle:
    """A verified bundle, decoded: what the Recommender needs, with no further disk reads."""

    path: Path
    manifest: Manifest
    manifest_bytes: bytes
    item_ids: tuple[str, ...]  # index order (inline in the manifest or from its item_ids_file)
    scene_spec: SceneSpec
    table: np.ndarray  # (N, d) float32, dequantized once
    head0: np.ndarray  # (P,) float32: phi0, the meta-learned initial head
    prototypes: np.ndarray | None  # (M, d) float32, for `because` when a user has no history
    programs: dict  # {"score": bytes, "adapt": bytes}: the verified program bytes, inflated
    trending: TrendingPack | None  # the pack shipped with the bundle, if any

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


def _read(path: Path, limit: int | None = None) -> bytes:
    try:
        if limit is not None and path.stat().st_size > limit:
            raise BundleError(f"{path.name} is larger than {limit} bytes")
        return path.read_bytes()
    except OSError as e:
        raise BundleError(f"cannot read {path}: {e}") from e


def _verified_file(root: Path, name: str, entry) -> bytes:
    path = root / name
    try:
        size = path.stat().st_size
    except OSError as e:
        raise BundleError(f"bundle file {name} is missing: {e}") from e
    if size != entry.bytes:  # checked before reading, so a huge substituted file is never loaded
        raise BundleError(f"bundle file {name} has {size} bytes, manifest says {entry.bytes}")
    data = _read(path)
    if len(data) != entry.bytes or hashlib.sha256(data).hexdigest() != entry.sha256:
        raise BundleError(f"bundle file {name} does not match its sha256 in the manifest")
    return data


def _canonical(raw: bytes) -> bytes:
    try:
        return json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                          allow_nan=False).encode("ascii")
    except ValueError:
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
    manifest_bytes = _read(root / MANIFEST_FILE, _MAX_MANIFEST_BYTES)
    verify_signature(manifest_bytes, _read(root / SIGNATURE_FILE, 1024), key)
    manifest = Manifest.from_json(manifest_bytes)
    # Canonical form is part of the contract: a signed but non-canonical manifest means the writer is not ours.
    # (Re-encoded as parsed, not via Manifest: a manifest that omits fields with defaults is still canonical.)
    if _canonical(manifest_bytes) != manifest_bytes:
        raise BundleError("manifest.json is not in canonical form (sorted keys, compact, ASCII)")

    needed = {p.file for p in manifest.programs.values()}
    needed |= {manifest.item_table.file, manifest.head.file}
    needed |= {n for n in (manifest.prototypes_file, manifest.trending_file, manifest.item_ids_file) if n is not None}
    data: dict[str, bytes] = {}
    for name, entry in sorted(manifest.files.items()):  # every listed file is verified, used or not
        blob = _verified_file(root, name, entry)
        if name in needed:
            data[name] = blob

    sh = manifest.shapes
    ts = manifest.item_table
    table = decode_table(data[ts.file], sh.N, sh.d, ts.format, ts.group_size)
    head0 = decode_floats(data[manifest.head.file], (sh.P,), manifest.head.file)
    prototypes = None
    if manifest.prototypes_file is not None:
        prototypes = decode_floats(data[manifest.prototypes_file], (len(manifest.prototype_labels), sh.d),
                                  manifest.prototypes_file)
    trending = TrendingPack.from_json(data[manifest.trending_file]) if manifest.trending_file else None
    item_ids = (decode_item_ids(data[manifest.item_ids_file], sh.N) if manifest.item_ids_file is not None
                else manifest.item_ids)
    bundle = Bundle(path=root, manifest=manifest, manifest_bytes=manifest_bytes, item_ids=item_ids,
                    scene_spec=SceneSpec.from_dict(dict(manifest.scene_spec)), table=table, head0=head0,
                    prototypes=prototypes, trending=trending,
                    programs={k: decode_program(data[p.file], p.codec, p.file)
                              for k, p in manifest.programs.items()})
    if store is not None and manifest.serial < store.max_serial():
        raise BundleError(f"bundle serial {manifest.serial} is older than {store.max_serial()}, already seen "
                          "by this state (rollback)")
    return bundle
