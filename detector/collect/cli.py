"""``citywatch collect sync|stats``: the collection of frames worth labelling (``detector.collect``).

    citywatch collect sync --api URL [--key KEY] [--dir var/collect] [--since ISO]
    citywatch collect stats [--dir var/collect] [--json]

``sync`` pulls the desk's verdicts (``GET /reviews``, a reviewer's, dispatcher's or admin's key in
``--key`` or ``CITYWATCH_API_KEY``) into the sidecars of the case frames; ``stats`` counts the frames
per stream and reason. ``citywatch collect export|import`` (interchange formats) are ``training``'s
(``training.collect_cli``); ``detector.commands.cli`` hands each subcommand to its module by name.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from detector.collect.record import KEEP_REASONS, VERDICTS, CollectError, read_record, sidecars
from detector.collect.sync import PAGE, SyncError, load_state, parse_since, sync

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
DEFAULT_DIR = Path("var/collect")


def collection_stats(root: Path) -> dict[str, Any]:
    """Per stream: frames, MiB, each reason's count, reviewed and labelled frames, first and last day."""
    streams: dict[str, dict[str, Any]] = {}
    unreadable = 0
    for path in sidecars(root):
        try:
            record = read_record(path)
        except CollectError:
            unreadable += 1
            continue
        s = streams.setdefault(
            record.stream,
            {"frames": 0, "bytes": 0, "reasons": Counter(), "reviewed": 0, "labelled": 0, "days": set()},
        )
        s["frames"] += 1
        s["bytes"] += _size(path) + _size(path.with_suffix(".jpg"))
        s["reasons"].update(record.reasons)
        s["reviewed"] += record.review is not None
        s["labelled"] += record.labels is not None
        s["days"].add(path.parent.name)
    out: dict[str, Any] = {"dir": str(root), "unreadable": unreadable, "streams": {}}
    for sid, s in sorted(streams.items()):
        days = sorted(s["days"])
        out["streams"][sid] = {
            "frames": s["frames"],
            "mib": round(s["bytes"] / (1024 * 1024), 2),
            "reasons": {r: s["reasons"][r] for r in (*KEEP_REASONS, *VERDICTS) if s["reasons"][r]},
            "reviewed": s["reviewed"],
            "labelled": s["labelled"],
            "first_day": days[0],
            "last_day": days[-1],
        }
    out["frames"] = sum(s["frames"] for s in out["streams"].values())
    out["mib"] = round(sum(s["mib"] for s in out["streams"].values()), 2)
    return out


def format_stats(stats: dict[str, Any]) -> str:
    lines = [f"{stats['dir']}: {stats['frames']} frames, {stats['mib']:.1f} MiB"]
    for sid, s in stats["streams"].items():
        reasons = ", ".join(f"{r} {n}" for r, n in s["reasons"].items())
        lines.append(
            f"  {sid}: {s['frames']} frames, {s['mib']:.1f} MiB, {s['first_day']}..{s['last_day']}; "
            f"reviewed {s['reviewed']}, labelled {s['labelled']}; {reasons}"
        )
    if stats["unreadable"]:
        lines.append(f"  {stats['unreadable']} sidecars could not be read (see `citywatch collect sync`)")
    return "\n".join(lines)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def cmd_sync(a: argparse.Namespace) -> int:
    import httpx

    key = a.key or os.environ.get("CITYWATCH_API_KEY")
    if not key:
        print("citywatch collect sync: give an API key: --key KEY or CITYWATCH_API_KEY", file=sys.stderr)
        return EXIT_USAGE
    api = a.api.rstrip("/")
    try:
        since = parse_since(a.since) if a.since else load_state(a.dir, api)
        with httpx.Client(base_url=api, headers={"X-API-Key": key}, timeout=a.timeout) as client:
            report = sync(client, a.dir, since, api, limit=a.limit)
    except SyncError as err:
        print(f"citywatch collect sync: {err}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{a.dir}: {report.summary()}")
    return EXIT_OK


def cmd_stats(a: argparse.Namespace) -> int:
    if not a.dir.is_dir():
        print(f"citywatch collect stats: {a.dir}: no such folder (collect.dir; --dir)", file=sys.stderr)
        return EXIT_USAGE
    stats = collection_stats(a.dir)
    print(json.dumps(stats, indent=1) if a.json else format_stats(stats))
    return EXIT_OK


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="citywatch collect", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sync", help="pull the desk's verdicts (GET /reviews) into the case frames")
    s.add_argument("--api", required=True, help="base URL of the case API, e.g. http://127.0.0.1:8000")
    s.add_argument(
        "--key", default=None, help="API key (reviewer, dispatcher or admin); or CITYWATCH_API_KEY"
    )
    s.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="the collection (collect.dir)")
    s.add_argument(
        "--since", default=None, help="ISO 8601 time to start from (default: where the last sync stopped)"
    )
    s.add_argument("--limit", type=int, default=PAGE, help="reviews per page")
    s.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    s.set_defaults(run=cmd_sync)
    t = sub.add_parser("stats", help="frames per stream and reason, and their size")
    t.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="the collection (collect.dir)")
    t.add_argument("--json", action="store_true", help="as JSON")
    t.set_defaults(run=cmd_stats)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    a = parser().parse_args(argv)
    code: int = a.run(a)
    return code


if __name__ == "__main__":
    sys.exit(main())
