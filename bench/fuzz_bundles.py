"""Hostile bundle fuzzing: mutate a signed bundle folder N times and open each mutant in a worker child.

    python -m metarec.bench.fuzz_bundles --mutations 10000 [--bundle DIR --key PRIVATE.pem] [--json out.json]
    metarec fuzz-bundles --mutations 10000

Mutations are raw (no key: flipped, truncated, extended, deleted, swapped files; FIFOs, devices, directories and
symlinks inside and outside the folder in place of files) and re-signed (with the key: hostile values in any
manifest field, implausible serials and shapes, listed files that are symlinks or devices, zlib bombs, flipped bytes
inside the programs). Reported per kind and in total: accepted wrongly (a mutant that must be refused opened),
untyped exceptions, hangs (per-case timeout), process deaths (a fault inside ExecuTorch), reads outside the folder
(every outside symlink points at a canary file whose access time is watched) and the peak allocation per case
(tracemalloc) and per case (max RSS growth of the case's forked child). Without --bundle a small bundle is exported from an untrained model.
`tests/runtime/test_fuzz.py` runs a seeded subset in `make test`; docs/reliability.md has the full run's figures.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

from metarec.runtime.bundle_codecs import sign_manifest

DEVICES = ("/dev/zero", "/dev/urandom", "/dev/null", "/dev/full")
HOSTILE_VALUES = (True, False, None, 0, -1, 1, 2 ** 63 - 1, 10 ** 9, 10 ** 30, 1.5, -0.0, "", "x", "../../etc/passwd",
                  "/etc/passwd", "\u0000", "\u00e9" * 3, "A" * 100_000, [], {}, [[[[[[]]]]]], {"a": {"b": {}}}, [1, 2])
MUST_REFUSE = {"raw_flip", "raw_truncate", "raw_append", "raw_delete", "raw_fifo", "raw_device", "raw_dir",
               "raw_symlink_outside", "raw_symlink_inside", "raw_swap", "signed_listed_outside",
               "signed_listed_special", "signed_bomb", "signed_serial", "signed_shapes"}


# ---------------------------------------------------------------------------------------------- mutations
class Case:
    """One mutant: its folder, the canary file outside it and the mutation's name."""

    def __init__(self, root: Path, canary: Path, priv: bytes, rng: random.Random):
        self.root, self.canary, self.priv, self.rng = root, canary, priv, rng
        self.manifest = json.loads((root / "manifest.json").read_bytes())

    def files(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir())

    def listed(self) -> list[str]:
        return sorted(self.manifest["files"])

    def replace(self, name: str) -> Path:
        """Move `name`'s bytes to the canary (outside the folder) and free its path."""
        path = self.root / name
        self.canary.write_bytes(path.read_bytes())
        path.unlink()
        return path

    def resign(self, d: dict | None = None) -> None:
        raw = json.dumps(self.manifest if d is None else d, sort_keys=True, separators=(",", ":"),
                         ensure_ascii=True).encode("ascii")
        (self.root / "manifest.json").write_bytes(raw)
        (self.root / "manifest.sig").write_bytes(sign_manifest(raw, self.priv))

    def relist(self, name: str, data: bytes | None = None) -> None:
        """Write `data` as `name` (unless None) and list its hash and size in the manifest."""
        if data is not None:
            (self.root / name).write_bytes(data)
            self.manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def m_raw_flip(c: Case) -> None:
    path = c.root / c.rng.choice(c.files())
    data = bytearray(path.read_bytes())
    for _ in range(c.rng.randint(1, 4)):
        i = c.rng.randrange(len(data))
        data[i] ^= c.rng.randint(1, 255)
    path.write_bytes(bytes(data))


def m_raw_truncate(c: Case) -> None:
    path = c.root / c.rng.choice(c.files())
    data = path.read_bytes()
    path.write_bytes(data[:c.rng.randrange(len(data))])


def m_raw_append(c: Case) -> None:
    with open(c.root / c.rng.choice(c.files()), "ab") as f:
        f.write(os.urandom(c.rng.choice([1, 7, 4096])))


def m_raw_delete(c: Case) -> None:
    (c.root / c.rng.choice(c.files())).unlink()


def m_raw_fifo(c: Case) -> None:
    os.mkfifo(c.replace(c.rng.choice(c.files())))


def m_raw_device(c: Case) -> None:
    os.symlink(c.rng.choice(DEVICES), c.replace(c.rng.choice(c.files())))


def m_raw_dir(c: Case) -> None:
    c.replace(c.rng.choice(c.files())).mkdir()


def m_raw_symlink_outside(c: Case) -> None:
    os.symlink(c.canary, c.replace(c.rng.choice(c.files())))  # the canary holds the very same bytes


def m_raw_symlink_inside(c: Case) -> None:
    a, b = c.rng.sample(c.files(), 2)
    c.replace(a)
    os.symlink(b, c.root / a)


def m_raw_swap(c: Case) -> None:
    a, b = c.rng.sample(c.files(), 2)
    da, db = (c.root / a).read_bytes(), (c.root / b).read_bytes()
    (c.root / a).write_bytes(db)
    (c.root / b).write_bytes(da)


def m_raw_extra(c: Case) -> None:
    """An unlisted file, FIFO or outside symlink: ignored by the reader (accepting is right), never read."""
    path = c.root / c.rng.choice(["extra.bin", "model.onnx.bak", "zz"])
    kind = c.rng.choice(["file", "fifo", "symlink"])
    if kind == "file":
        path.write_bytes(os.urandom(64))
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        c.canary.write_bytes(b"canary")
        os.symlink(c.canary, path)


def _paths(d, prefix=()):
    """Every (path, value) in a JSON tree."""
    yield prefix, d
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            yield from _paths(v, prefix + (i,))


def _set(d, path, value, delete=False):
    for p in path[:-1]:
        d = d[p]
    if delete:
        d.pop(path[-1]) if isinstance(d, dict) else d.pop(path[-1])
    else:
        d[path[-1]] = value


def m_signed_field(c: Case) -> None:
    paths = [p for p, _ in _paths(c.manifest) if p and p[0] != "configs"]  # configs are opaque on purpose
    path = c.rng.choice(paths)
    if c.rng.random() < 0.2:
        _set(c.manifest, path, None, delete=True)
    else:
        _set(c.manifest, path, c.rng.choice(HOSTILE_VALUES))
    c.resign()


def m_signed_listed_outside(c: Case) -> None:
    name = c.rng.choice(c.listed())
    data = (c.root / name).read_bytes()
    c.replace(name)
    os.symlink(c.canary, c.root / name)  # same bytes, same hash: only the symlink is wrong
    c.manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    c.resign()


def m_signed_listed_special(c: Case) -> None:
    name = c.rng.choice(c.listed())
    c.replace(name)
    kind = c.rng.choice(["fifo", "zero", "null"])
    if kind == "fifo":
        os.mkfifo(c.root / name)
        entry = {"sha256": hashlib.sha256(b"").hexdigest(), "bytes": 0}
    else:
        os.symlink(f"/dev/{kind}", c.root / name)
        n = c.rng.choice([0, 4096])
        entry = {"sha256": hashlib.sha256(b"\0" * n).hexdigest(), "bytes": n}
    c.manifest["files"][name] = entry
    c.resign()


_BOMB: dict[int, bytes] = {}


def m_signed_bomb(c: Case) -> None:
    size = c.rng.choice([100 << 20, 400 << 20])
    if size not in _BOMB:
        _BOMB[size] = zlib.compress(b"\0" * size, 9)
    target = c.rng.choice(sorted(c.manifest["programs"]) + ["ids"])
    if target == "ids" and c.manifest.get("item_ids_file"):
        c.relist(c.manifest["item_ids_file"], _BOMB[size])
    else:
        prog = c.manifest["programs"]["score" if target == "ids" else target]
        prog["codec"] = "zlib"
        c.relist(prog["file"], _BOMB[size])
    c.resign()


def m_signed_serial(c: Case) -> None:
    c.manifest["serial"] = c.rng.choice([2 ** 63 - 1, 2 ** 40 + 1, int(time.time()) + 3 * 366 * 86400, 0, -5,
                                         True, 1.0, "7"])
    c.resign()


def m_signed_shapes(c: Case) -> None:
    key = c.rng.choice(sorted(c.manifest["shapes"]))
    c.manifest["shapes"][key] = c.rng.choice([10 ** 9, 2 ** 31, 2 ** 63, 0, -1, True, 1.0])
    c.resign()


def m_signed_program_flip(c: Case) -> None:
    """Flipped bytes inside a program, re-encoded and re-signed: what only a key holder can ship."""
    prog = c.manifest["programs"][c.rng.choice(sorted(c.manifest["programs"]))]
    stored = (c.root / prog["file"]).read_bytes()
    pte = bytearray(zlib.decompress(stored) if prog["codec"] == "zlib" else stored)
    for _ in range(c.rng.choice([1, 1, 2, 4, 16])):
        i = c.rng.randrange(8, len(pte))  # keep the magic: the reader's cheap check would stop the rest
        pte[i] = c.rng.randrange(256)
    c.relist(prog["file"], zlib.compress(bytes(pte), 9) if prog["codec"] == "zlib" else bytes(pte))
    c.resign()


MUTATIONS = {name[2:]: fn for name, fn in sorted(globals().items()) if name.startswith("m_")}


# ---------------------------------------------------------------------------------------------- base bundle
def make_base_bundle(work: Path) -> tuple[Path, bytes, Path]:
    """(bundle dir, private PEM, public PEM path): a small bundle exported from an untrained model."""
    import numpy as np

    from metarec.export import export_bundle, generate_keypair
    from metarec.sdk.model import MetaRecModel, ModelConfig

    keys = generate_keypair(work / "keys")
    cfg = ModelConfig(dim=16, n_prototypes=4, scene_hidden=4, head_hidden=4, hist_len=5, n_negatives=6)
    rng = np.random.default_rng(0)
    model = MetaRecModel(cfg, 200, (rng.random((200, 6)) < 0.3).astype(np.float32)).eval()
    out = export_bundle(model, work / "base", quant="int8", prune="none", key_path=keys / "private.pem",
                        item_ids=[f"item-{i}" for i in range(200)])
    return out, (keys / "private.pem").read_bytes(), keys / "public.pem"


# ---------------------------------------------------------------------------------------------- driver
class _Worker:
    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-m", "metarec.bench.fuzz_worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
        assert json.loads(self.proc.stdout.readline())["ready"]
        self.case = None  # (index, kind, Case, deadline)

    def send(self, job: dict) -> None:
        self.proc.stdin.write(json.dumps(job) + "\n")

    def kill(self) -> int:
        self.proc.kill()
        return self.proc.wait()


def _new_case(base: Path, tmp: Path, i: int, kind: str, priv: bytes, seed: int) -> Case:
    root = tmp / f"case{i}"
    shutil.copytree(base, root)
    canary = tmp / f"canary{i}"
    canary.write_bytes(b"canary")
    c = Case(root, canary, priv, random.Random(seed * 1_000_003 + i))
    MUTATIONS[kind](c)
    st = os.stat(canary)  # access time older than the modification time: relatime then records any read
    os.utime(canary, ns=(st.st_mtime_ns - 10 ** 12, st.st_mtime_ns))
    c.atime = os.stat(canary).st_atime_ns
    return c


def run_fuzz(base: Path, priv: bytes, public_key: Path, mutations: int, seed: int = 0, workers: int = 2,
             timeout: float = 60.0, kinds: list[str] | None = None, progress: bool = False) -> dict:
    """Mutate `base` `mutations` times (kinds round-robin, contents seeded) and open each mutant in a worker."""
    kinds = kinds or sorted(MUTATIONS)
    stats = {k: {"n": 0, "accepted": 0, "refused": 0, "accepted_wrongly": 0, "untyped": 0, "hangs": 0, "deaths": 0,
                 "outside_reads": 0} for k in kinds}
    examples, peak_traced, peak_rss_kb, deaths_by_signal = [], 0, 0, {}
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmpd:
        tmp = Path(tmpd)
        pool = [_Worker() for _ in range(workers)]
        sel = selectors.DefaultSelector()
        todo = list(range(mutations))

        def finish(w: _Worker, result: dict | None, how: str | None) -> None:
            nonlocal peak_traced, peak_rss_kb
            i, kind, case, _ = w.case
            w.case = None
            s = stats[kind]
            s["n"] += 1
            if os.stat(case.canary).st_atime_ns != case.atime:
                s["outside_reads"] += 1
                examples.append({"case": i, "kind": kind, "what": "read outside the folder"})
            if how is not None:
                s[how] += 1
                examples.append({"case": i, "kind": kind, "what": how})
            else:
                peak_traced = max(peak_traced, result.get("peak_traced", 0))
                peak_rss_kb = max(peak_rss_kb, result.get("rss_growth_kb", 0))
                if result["outcome"].startswith("death:") or result["outcome"] == "hang":
                    how = "deaths" if result["outcome"] != "hang" else "hangs"
                    s[how] += 1
                    deaths_by_signal[result["outcome"]] = deaths_by_signal.get(result["outcome"], 0) + 1
                    examples.append({"case": i, "kind": kind, "what": result["outcome"]})
                elif result["outcome"] == "accepted":
                    s["accepted"] += 1
                    if kind in MUST_REFUSE:
                        s["accepted_wrongly"] += 1
                        examples.append({"case": i, "kind": kind, "what": "accepted wrongly"})
                elif result["outcome"].startswith("untyped:"):
                    s["untyped"] += 1
                    examples.append({"case": i, "kind": kind, "what": result["outcome"], "error": result["error"]})
                else:
                    s["refused"] += 1
            shutil.rmtree(case.root, ignore_errors=True)
            for p in (case.canary, Path(f"{case.root}.db"), Path(f"{case.root}.db.lock"), Path(f"{case.root}.db.mark")):
                p.unlink(missing_ok=True)

        while todo or any(w.case for w in pool):
            for w in pool:
                if w.case is None and todo:
                    i = todo.pop(0)
                    kind = kinds[i % len(kinds)]
                    case = _new_case(base, tmp, i, kind, priv, seed)
                    w.case = (i, kind, case, time.monotonic() + 2 * timeout + 30)  # backstop: the worker times cases
                    w.send({"dir": str(case.root), "state": f"{case.root}.db", "key": str(public_key),
                            "timeout": timeout})
                    sel.register(w.proc.stdout, selectors.EVENT_READ, w)
            wait = max(0.0, min(w.case[3] for w in pool if w.case) - time.monotonic())
            ready = sel.select(wait)
            for key, _ in ready:
                w = key.data
                sel.unregister(w.proc.stdout)
                line = w.proc.stdout.readline()
                if line:
                    finish(w, json.loads(line), None)
                else:  # the fork server itself died (it runs no case code): counted as a death too
                    code = w.proc.wait()
                    deaths_by_signal[f"worker:{code}"] = deaths_by_signal.get(f"worker:{code}", 0) + 1
                    finish(w, None, "deaths")
                    pool[pool.index(w)] = _Worker()
            now = time.monotonic()
            for j, w in enumerate(pool):
                if w.case and now > w.case[3]:
                    sel.unregister(w.proc.stdout)
                    w.kill()
                    finish(w, None, "hangs")
                    pool[j] = _Worker()
            if progress and ready:
                done = mutations - len(todo)
                if done % 500 == 0:
                    print(f"{done}/{mutations} {time.time() - t0:.0f}s", file=sys.stderr, flush=True)
        for w in pool:
            w.kill()
    total = {k: sum(s[k] for s in stats.values()) for k in next(iter(stats.values()))}
    return {"mutations": mutations, "seed": seed, "timeout_s": timeout, "workers": workers, "total": total,
            "by_kind": stats, "deaths_and_hangs": deaths_by_signal, "peak_traced_mb": round(peak_traced / 2 ** 20, 1),
            "peak_rss_growth_mb": round(peak_rss_kb / 1024, 1), "elapsed_s": round(time.time() - t0, 1),
            "examples": examples[:50]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="metarec fuzz-bundles", description=__doc__.split("\n\n")[0])
    p.add_argument("--mutations", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--timeout", type=float, default=60.0, help="per case, seconds")
    p.add_argument("--bundle", default=None, help="signed bundle to mutate (default: export a small one)")
    p.add_argument("--key", default=None, help="its private key PEM (re-signed mutations)")
    p.add_argument("--kinds", default=None, help="comma-separated subset of " + ",".join(MUTATIONS))
    p.add_argument("--json", default=None, help="write the report here too")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fuzz-base-") as work:
        if a.bundle:  # the public key is derived from the private one, so the pair always matches
            from cryptography.hazmat.primitives import serialization

            priv = Path(a.key).read_bytes()
            pub = Path(work) / "public.pem"
            pub.write_bytes(serialization.load_pem_private_key(priv, None).public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
            base = Path(a.bundle)
        else:
            base, priv, pub = make_base_bundle(Path(work))
        r = run_fuzz(base, priv, pub, a.mutations, a.seed, a.workers, a.timeout,
                     a.kinds.split(",") if a.kinds else None, progress=True)
    r["command"] = "python -m metarec.bench.fuzz_bundles " + " ".join(argv if argv is not None else sys.argv[1:])
    text = json.dumps(r, indent=1)
    print(text)
    if a.json:
        Path(a.json).write_text(text + "\n")
    bad = r["total"]
    return int(bool(bad["accepted_wrongly"] or bad["untyped"] or bad["hangs"] or bad["outside_reads"]))


if __name__ == "__main__":
    sys.exit(main())
