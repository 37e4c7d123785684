"""Verification on open: every tampering is refused with BundleError and leaves the state as it was."""
import json
import shutil

import pytest

from metarec.runtime import BundleError, Recommender
from metarec.runtime.bundle import open_bundle
from metarec.runtime.bundle_codecs import generate_keypair, sign_manifest
from metarec.runtime.store import Store

from tiny_bundle import ITEM_IDS

BUNDLE_FILES = ["manifest.json", "manifest.sig", "score.pte", "adapt.pte", "items.bin", "head_init.bin",
                "prototypes.bin"]


def _serial_seen(state) -> int:
    s = Store(state)
    try:
        return s.max_serial()
    finally:
        s.close()


def _refused(bundle, state, key):
    before = _serial_seen(state)
    with pytest.raises(BundleError):
        Recommender.open(bundle, state, trusted_key=key)
    assert _serial_seen(state) == before  # a refused bundle changes no state


def test_untouched_bundle_opens(bundle_dir, tmp_path, keys):
    with Recommender.open(bundle_dir, tmp_path / "s.db", trusted_key=keys[1]) as rec:
        assert rec.serial == 1 and len(rec.recommend("u", 8.8e8, 5)) == 5
    assert _serial_seen(tmp_path / "s.db") == 1


@pytest.mark.parametrize("name", BUNDLE_FILES)
@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_flipped_byte_or_truncation_in_each_file_is_refused(bundle_dir, tmp_path, keys, name, how):
    path = bundle_dir / name
    data = bytearray(path.read_bytes())
    if how == "flip":
        data[len(data) // 2] ^= 0x01
    else:
        del data[-max(1, len(data) // 10):]
    path.write_bytes(bytes(data))
    _refused(bundle_dir, tmp_path / "s.db", keys[1])


def test_missing_file_or_signature_is_refused(make_bundle, tmp_path, keys):
    for name in ("adapt.pte", "manifest.sig", "manifest.json"):
        b = make_bundle(f"b-{name}")
        (b / name).unlink()
        _refused(b, tmp_path / "s.db", keys[1])


def test_swapped_manifest_is_refused(make_bundle, tmp_path, keys):
    from metarec.runtime import TrendingPack

    a = make_bundle("a")
    b = make_bundle("b", trending=TrendingPack.from_counts(8.8e8, {ITEM_IDS[0]: 4}), inner_steps=2)
    # b's manifest and signature are genuine, but they describe other files than a's
    for name in ("manifest.json", "manifest.sig"):
        shutil.copy(b / name, a / name)
    (a / "trending.json").write_bytes(b"{}")
    _refused(a, tmp_path / "s.db", keys[1])


def test_manifest_signed_by_another_key_or_checked_with_wrong_key(bundle_dir, tmp_path, keys):
    other_priv, other_pub = generate_keypair()
    wrong = tmp_path / "other.pem"
    wrong.write_bytes(other_pub)
    _refused(bundle_dir, tmp_path / "s.db", wrong)
    (bundle_dir / "manifest.sig").write_bytes(sign_manifest((bundle_dir / "manifest.json").read_bytes(),
                                                            other_priv))
    _refused(bundle_dir, tmp_path / "s.db", keys[1])


def test_edited_manifest_is_refused_even_if_files_match(bundle_dir, tmp_path, keys):
    d = json.loads((bundle_dir / "manifest.json").read_bytes())
    d["serial"] = 99  # an attacker bumping the serial without the key
    (bundle_dir / "manifest.json").write_bytes(json.dumps(d, sort_keys=True, separators=(",", ":")).encode())
    _refused(bundle_dir, tmp_path / "s.db", keys[1])


def test_non_canonical_but_signed_manifest_is_refused(bundle_dir, tmp_path, keys):
    d = json.loads((bundle_dir / "manifest.json").read_bytes())
    raw = json.dumps(d, indent=1).encode()
    (bundle_dir / "manifest.json").write_bytes(raw)
    (bundle_dir / "manifest.sig").write_bytes(sign_manifest(raw, keys[0]))
    _refused(bundle_dir, tmp_path / "s.db", keys[1])


def test_wrong_schema_version_signed_is_refused(bundle_dir, tmp_path, keys):
    d = json.loads((bundle_dir / "manifest.json").read_bytes())
    d["schema_version"] = 1  # v1 let a program's codec fall back to the exporter's config; v2 refuses it
    raw = json.dumps(d, sort_keys=True, separators=(",", ":")).encode()
    (bundle_dir / "manifest.json").write_bytes(raw)
    (bundle_dir / "manifest.sig").write_bytes(sign_manifest(raw, keys[0]))
    with pytest.raises(BundleError, match="schema_version"):
        Recommender.open(bundle_dir, tmp_path / "s.db", trusted_key=keys[1])


def _resign(bundle_dir, d, private_pem) -> None:
    raw = json.dumps(d, sort_keys=True, separators=(",", ":")).encode()
    (bundle_dir / "manifest.json").write_bytes(raw)
    (bundle_dir / "manifest.sig").write_bytes(sign_manifest(raw, private_pem))


@pytest.mark.parametrize("program", ["score", "adapt"])
@pytest.mark.parametrize("codec, needle", [(None, "missing programs.* fields \\['codec'\\]"),
                                           ("lz4", "program codec 'lz4' unknown")])
def test_program_codec_missing_or_unknown_is_refused(make_bundle, keys, program, codec, needle):
    """The codec lives in each program's own manifest entry; the exporter's config is never consulted."""
    b = make_bundle("codec", codec="zlib")
    d = json.loads((b / "manifest.json").read_bytes())
    if codec is None:
        del d["programs"][program]["codec"]
    else:
        d["programs"][program]["codec"] = codec
    d["configs"]["export"] = {"program_codec": "zlib"}  # what v1 fell back to: must not rescue the manifest
    _resign(b, d, keys[0])
    with pytest.raises(BundleError, match=needle):
        open_bundle(b, keys[1])


def test_program_codec_mismatch_is_refused(make_bundle, keys):
    """A zlib-stored program recorded as "none" is not guessed at (the old bench sniffed zlib): BundleError."""
    b = make_bundle("mismatch", codec="zlib")
    d = json.loads((b / "manifest.json").read_bytes())
    d["programs"]["score"]["codec"] = "none"
    _resign(b, d, keys[0])
    with pytest.raises(BundleError, match="not an ExecuTorch program"):
        open_bundle(b, keys[1])


def test_read_file_is_verified_against_the_manifest(make_bundle, keys):
    b = make_bundle("read")
    bundle = open_bundle(b, keys[1])
    assert bundle.read_file("items.bin") == (b / "items.bin").read_bytes()
    (b / "items.bin").write_bytes(bytes(len(bundle.read_file("items.bin"))))  # same size, other bytes
    with pytest.raises(BundleError, match="sha256"):
        bundle.read_file("items.bin")
    with pytest.raises(BundleError, match="not listed"):
        bundle.read_file("manifest.json")


def test_older_serial_is_refused_as_rollback(make_bundle, tmp_path, keys):
    state = tmp_path / "s.db"
    new, old = make_bundle("new", serial=5), make_bundle("old", serial=4)
    Recommender.open(new, state, trusted_key=keys[1]).close()
    with pytest.raises(BundleError, match="rollback"):
        Recommender.open(old, state, trusted_key=keys[1])
    assert _serial_seen(state) == 5
    Recommender.open(new, state, trusted_key=keys[1]).close()  # the same serial again is fine
    Recommender.open(make_bundle("newer", serial=6), state, trusted_key=keys[1]).close()
    assert _serial_seen(state) == 6


def test_zlib_stored_programs_are_inflated_after_verification(make_bundle, tmp_path, keys):
    plain = make_bundle("plain")
    packed = make_bundle("packed", codec="zlib")
    assert (packed / "score.pte").stat().st_size < (plain / "score.pte").stat().st_size
    with Recommender.open(plain, tmp_path / "a.db", trusted_key=keys[1]) as a, \
            Recommender.open(packed, tmp_path / "b.db", trusted_key=keys[1]) as b:
        a.record("u", ITEM_IDS[4], 8.8e8)
        b.record("u", ITEM_IDS[4], 8.8e8)
        assert a.recommend("u", 8.8e8 + 60) == b.recommend("u", 8.8e8 + 60)


def test_signed_non_program_bytes_are_refused_not_crashing(make_bundle, tmp_path, keys):
    """ExecuTorch aborts the process on some garbage; the runtime must refuse it before loading, even when the
    bundle is correctly signed (a broken export, not an attacker)."""
    import hashlib

    b = make_bundle("garbage")
    junk = b"x\xda" + bytes(range(256)) * 8
    (b / "score.pte").write_bytes(junk)
    d = json.loads((b / "manifest.json").read_bytes())
    d["files"]["score.pte"] = {"sha256": hashlib.sha256(junk).hexdigest(), "bytes": len(junk)}
    raw = json.dumps(d, sort_keys=True, separators=(",", ":")).encode()
    (b / "manifest.json").write_bytes(raw)
    (b / "manifest.sig").write_bytes(sign_manifest(raw, keys[0]))
    with pytest.raises(BundleError, match="not an ExecuTorch program"):
        Recommender.open(b, tmp_path / "s.db", trusted_key=keys[1])
    d["programs"]["score"]["codec"] = "zlib"
    raw = json.dumps(d, sort_keys=True, separators=(",", ":")).encode()
    (b / "manifest.json").write_bytes(raw)
    (b / "manifest.sig").write_bytes(sign_manifest(raw, keys[0]))
    with pytest.raises(BundleError, match="zlib"):
        Recommender.open(b, tmp_path / "s.db", trusted_key=keys[1])


def test_item_ids_in_a_file_open_like_inline_ids(make_bundle, tmp_path, keys):
    from metarec.runtime.bundle_codecs import encode_item_ids


    inline = open_bundle(make_bundle("inline"), keys[1])
    filed = open_bundle(make_bundle("filed", ids_file=encode_item_ids(ITEM_IDS)), keys[1])
    assert filed.manifest.item_ids == () and filed.item_ids == inline.item_ids == tuple(ITEM_IDS)


@pytest.mark.parametrize("ids, needle", [
    (lambda ids: ids[:-1], "item_ids but N"),  # one short
    (lambda ids: [ids[0]] + ids[1:-1] + [ids[0]], "not unique"),
    (lambda ids: ids[:-1] + [""], "non-empty"),
])
def test_signed_but_wrong_item_ids_file_is_refused(make_bundle, keys, ids, needle):
    from metarec.runtime.bundle_codecs import encode_item_ids


    bad = make_bundle("bad", ids_file=encode_item_ids(ids(list(ITEM_IDS))))
    with pytest.raises(BundleError, match=needle):
        open_bundle(bad, keys[1])


def test_signed_non_zlib_item_ids_file_is_refused(make_bundle, keys):
    with pytest.raises(BundleError, match="item_ids_file"):
        open_bundle(make_bundle("junk", ids_file=b"1\n2\n3"), keys[1])
