"""A seeded subset of the hostile bundle fuzzing (bench/fuzz_bundles.py; the full run is
`python -m metarec.bench.fuzz_bundles --mutations 10000`, figures in docs/reliability.md): raw and re-signed
mutants, FIFOs, devices and symlinks in the folder, each opened in a worker child with a per-case timeout."""
from metarec.bench.fuzz_bundles import MUTATIONS, run_fuzz

PER_KIND = 6


def test_seeded_fuzz_subset_is_refused_typed_bounded_and_inside_the_folder(make_bundle, keys):
    base = make_bundle("base", rank=True, codec="zlib")
    r = run_fuzz(base, keys[0], keys[1], mutations=PER_KIND * len(MUTATIONS), seed=17, workers=2, timeout=60)
    t = r["total"]
    assert t["n"] == PER_KIND * len(MUTATIONS)
    assert (t["accepted_wrongly"], t["untyped"], t["hangs"], t["outside_reads"]) == (0, 0, 0, 0), r["examples"]
    # a native fault needs a program only a key holder could ship (docs/decisions/program-trust.md)
    assert all(s["deaths"] == 0 for k, s in r["by_kind"].items() if k != "signed_program_flip"), r["by_kind"]
    assert r["peak_traced_mb"] < 256
    assert t["refused"] >= PER_KIND * 14  # the mutants did reach the checks: most kinds must be refused


if __name__ == "__main__":  # the same subset's figures: python tests/runtime/test_fuzz.py
    import json
    import tempfile
    from pathlib import Path

    from metarec.runtime.bundle_codecs import generate_keypair
    from tiny_bundle import TinyModel, export_programs, write_bundle

    priv, pub = generate_keypair()
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "pub.pem").write_bytes(pub)
        m = TinyModel()
        b = write_bundle(Path(d) / "base", m, export_programs(m, rank=True), priv, rank=True, codec="zlib")
        print(json.dumps(run_fuzz(b, priv, Path(d) / "pub.pem", PER_KIND * len(MUTATIONS), seed=17), indent=1))
