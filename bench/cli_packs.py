"""`metarec trending | neighbors | onboarding`: the signed packs a server sends phones between bundles (the trending
counts, the item-item term's table, the onboarding term's counts), each bound to a shipped bundle's catalog."""
from __future__ import annotations

import sys
from pathlib import Path

from metarec.bench.cli import _dataset_arg, parse_duration, parse_time


def cmd_trending(a, argv) -> int:
    from metarec.export.catalog import public_pem
    from metarec.runtime.bundle import open_bundle
    from metarec.runtime.bundle_codecs import catalog_digest
    from metarec.runtime.trending import TrendingPack
    from metarec.sdk.catalog import window_counts
    from metarec.sdk.data import load_dataset

    at, window = parse_time(a.at), parse_duration(a.window)
    ds = load_dataset(_dataset_arg(a.events))
    counts = window_counts(ds, at, window)
    bundle = open_bundle(a.bundle, public_pem(a.key))  # the catalog the pack is bound to, verified with the key
    pack = TrendingPack.from_counts(at, counts, catalog=catalog_digest(bundle.item_ids))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pack.save(out, Path(a.key))
    inside = sum(1 for i in counts if i in set(bundle.item_ids))
    print(f"wrote {out.resolve()} (+ .sig): {len(counts)} item(s) with events in [at - {a.window}, at), {inside} in "
          f"the bundle's catalog, {int(sum(counts.values()))} events; at={at:.0f}, bound to bundle serial "
          f"{bundle.serial}'s catalog")
    return 0


def _term_of(a, field: str, term: str, pack: str):
    """(the verified bundle, its manifest block `field` or None (an error printed), the output path, its folder
    made)."""
    from metarec.export.catalog import public_pem
    from metarec.runtime.bundle import open_bundle

    bundle = open_bundle(a.bundle, public_pem(a.key))  # the term's settings and the catalog, verified
    spec = getattr(bundle.manifest, field)
    if spec is None:
        print(f"error: bundle {a.bundle} has no {term} (its export chose none): no {pack} to make", file=sys.stderr)
        return bundle, None, None
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return bundle, spec, out


def cmd_neighbors(a, argv) -> int:
    from metarec.runtime.bundle_codecs import catalog_digest
    from metarec.runtime.neighbors import NeighborPack
    from metarec.sdk.data import load_dataset
    from metarec.sdk.neighbors import pack_table

    at = parse_time(a.at)
    bundle, spec, out = _term_of(a, "neighbors", "item-item term", "neighbour pack")
    if spec is None:
        return 2
    ds = load_dataset(_dataset_arg(a.events))
    ids, w = pack_table(ds, at, spec.kind, spec.m, bundle.item_ids)
    NeighborPack(at, catalog_digest(bundle.item_ids), spec.kind, ids, w).save(out, Path(a.key))
    print(f"wrote {out.resolve()} (+ .sig): {spec.kind} neighbours, m={spec.m}, {int((ids >= 0).any(1).sum())} of "
          f"{len(ids)} items with a row, {int((ds.ts < at).sum())} events before at={at:.0f}, "
          f"{out.stat().st_size / 1024:.0f} KB; bound to bundle serial {bundle.serial}'s catalog")
    return 0


def cmd_onboarding(a, argv) -> int:
    from metarec.runtime.bundle_codecs import catalog_digest
    from metarec.runtime.onboarding import OnboardingPack
    from metarec.sdk.data import load_dataset
    from metarec.sdk.onboarding import pack_rows
    from metarec.sdk.protocol import EventLog

    at = parse_time(a.at)
    bundle, spec, out = _term_of(a, "onboarding", "onboarding term", "onboarding pack")
    if spec is None:
        return 2
    ds = load_dataset(_dataset_arg(a.events))
    rows = pack_rows(EventLog(ds), at, -1, spec, ds.item_ids)
    OnboardingPack.from_rows(at, rows, catalog_digest(bundle.item_ids)).save(out, Path(a.key))
    print(f"wrote {out.resolve()} (+ .sig): per history length 0..{len(rows) - 1}, items other users took as their "
          f"event number K - {spec.span} .. K + {spec.span} in the {spec.window_days:g} days before at={at:.0f} "
          f"({sum(len(r) for r in rows)} entries, {out.stat().st_size / 1024:.0f} KB); bound to bundle serial "
          f"{bundle.serial}'s catalog")
    return 0


def add_pack_commands(sub) -> None:
    """The three pack commands' parsers."""
    s = sub.add_parser("trending", help="a signed trending pack (item counts over a window) from an events file")
    s.add_argument("events", help="events CSV/Parquet or folder (the layouts --dataset takes)")
    s.add_argument("--bundle", required=True, help="the shipped bundle whose catalog the pack is bound to")
    s.add_argument("--at", default=None, help="pack time: unix seconds or ISO 8601 (default: now); counts events "
                                              "in [at - window, at)")
    s.add_argument("--window", default="7d", help="count window (default: %(default)s, what the model was trained on)")
    s.add_argument("--key", required=True, help="the bundle's Ed25519 private key PEM")
    s.add_argument("--out", required=True, help="pack file to write (and OUT.sig)")
    s.set_defaults(fn=cmd_trending)

    s = sub.add_parser("neighbors", help="a signed neighbour pack (the item-item term's table) from an events file")
    s.add_argument("events", help="events CSV/Parquet or folder (the layouts --dataset takes)")
    s.add_argument("--bundle", required=True, help="the shipped bundle: its catalog and its term's kind and m")
    s.add_argument("--at", default=None, help="pack time: unix seconds or ISO 8601 (default: now); uses every "
                                              "event before it")
    s.add_argument("--key", required=True, help="the bundle's Ed25519 private key PEM")
    s.add_argument("--out", required=True, help="pack file to write (and OUT.sig)")
    s.set_defaults(fn=cmd_neighbors)

    s = sub.add_parser("onboarding", help="a signed onboarding pack (what users took at each history length lately) "
                                          "from an events file")
    s.add_argument("events", help="events CSV/Parquet or folder (the layouts --dataset takes)")
    s.add_argument("--bundle", required=True, help="the shipped bundle: its catalog and its term's span and window")
    s.add_argument("--at", default=None, help="pack time: unix seconds or ISO 8601 (default: now)")
    s.add_argument("--key", required=True, help="the bundle's Ed25519 private key PEM")
    s.add_argument("--out", required=True, help="pack file to write (and OUT.sig)")
    s.set_defaults(fn=cmd_onboarding)
