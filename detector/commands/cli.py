"""The ``citywatch`` command: one entry point that hands each subcommand to its part.

Subcommands are imported only when used, so ``citywatch config check`` does not load torch,
and the detector never imports the API: ``citywatch api`` runs it as its own process.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable

USAGE = """usage: citywatch <command> [options]

operators
  config check FILE         validate a streams.yaml; every problem with file:line and a fix hint
  run [--config FILE]       run the detector on every enabled stream (publishes over MQTT)
  doctor [--config FILE] [--json]
                            check this machine: packages, config, broker, API, database, models,
                            disk, decoding, ports; each problem with what to fix (exit 1 on FAIL)
  status [--config FILE]    each stream's state (live, stalled, failed...) as last published on MQTT
  replay VIDEO --stream ID  run the pipeline on a file as fast as possible, events to --out JSONL
  demo [--config FILE]      broker (embedded if none answers) + API + detector on the sample streams
  api [--host H --port P] [--dev]
                            run the case API (also: python -m api); it needs API keys
                            (api/AUTH.md), or --dev for the documented keys on loopback
  api retention [--dry-run] delete old photos of ended cases and old dead letters

drone team
  survey INPUT --out DIR [--baseline DIR] [--publish] [--resume] [--ray ADDR]
                            geo-referenced findings of a flight (video + .SRT, or photos), change
                            against the last survey; new structures become cases

data team
  synth dataset --out DIR   render the synthetic street + drone YOLO dataset
  synth scenario YAML.. --out DIR
                            render scripted scenario clips with their ground truth
  synth flight --out DIR [--variant]
                            render a synthetic drone flight (mp4 + DJI .SRT + truth)
  dataset build --out DIR --collection DIR.. [--synth YAML --synth-ratio R]
                            a training set from labelled and desk-reviewed frames (+ synthetic),
                            split by camera and day, with its dataset card
  train | eval | export     train, evaluate and export models (offline, ultralytics)
  models list|show|promote|rollback|rehash|tune
                            the model registry in models/manifest.yaml; promote: through
                            the gate (no worse than the default), rollback: the previous
                            default; rehash: record the sha256 of a model's exports as
                            they are; tune: measure a model's exports on this CPU and cache
                            the fastest
  eval-clips EXPECTATIONS.yaml [--json] [--config FILE] [--evidence-dir DIR]
                            real clips and stills against written expectations: false and missed cases
  collect sync --api URL [--key KEY] [--dir DIR] [--since ISO]
                            the desk's verdicts (GET /reviews) into the collected case frames
  collect stats [--dir DIR] [--json]
                            collected frames (streams.yaml `collect:`) per stream and reason
  collect export --format labelstudio|cvat|yolo|coco --out DIR [--dir DIR] [--reasons R,..]
                 [--streams S,..] [--since DAY] [--unlabelled-only] [--image-url local-files:ROOT|prefix:URL]
                            collected frames for a labelling tool, the model's boxes as
                            pre-annotations corrected by the desk's verdicts
  collect import FILE_OR_DIR --format ... [--dir DIR] [--class-map MAP] [--skip-unknown] [--by NAME]
                            a labelling tool's export back: `labels` in the frames' sidecars

run `citywatch <command> --help` for the options of each.
"""

Main = Callable[[list[str]], int]

#: ``citywatch collect <sub>``: the module whose ``main(argv)`` runs it, given ``[sub, *options]``
#: (detector's own, or training's by name: the detector never imports training).
COLLECT = {
    "sync": "detector.collect.cli",
    "stats": "detector.collect.cli",
    "export": "training.collect_cli",
    "import": "training.collect_cli",
}


def _entry(module: str, attr: str = "main") -> Main:
    fn: Main = getattr(importlib.import_module(module), attr)
    return fn


def _api(argv: list[str]) -> int:
    return subprocess.call([sys.executable, "-m", "api", *argv])


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if args else 2
    cmd, rest = args[0], args[1:]
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    if cmd == "config":
        if not rest or rest[0] != "check":
            print("usage: citywatch config check FILE", file=sys.stderr)
            return 2
        return _entry("detector.config.check")(rest[1:])
    if cmd == "synth":
        sub = {
            "dataset": "training.synth.dataset",
            "scenario": "training.synth.scenario",
            "flight": "training.synth.flight",
        }
        if not rest or rest[0] not in sub:
            print("usage: citywatch synth dataset|scenario|flight ...", file=sys.stderr)
            return 2
        return _entry(sub[rest[0]])(rest[1:])
    if cmd == "collect":
        return _collect(rest)
    if cmd == "models" and rest[:1] == ["tune"]:  # the detector's runtime on this host, not training's
        return _entry("detector.inference.tune")(rest[1:])
    if cmd == "dataset":
        return _entry("training.dataset_cli")(rest)
    if cmd in ("train", "eval", "export", "models"):
        return _entry("training.cli")(args)
    table: dict[str, Main] = {
        "replay": _entry_lazy("detector.commands.replay"),
        "run": _entry_lazy("detector.commands.run"),
        "demo": _entry_lazy("detector.commands.demo"),
        "status": _entry_lazy("detector.commands.status"),
        "doctor": _entry_lazy("detector.commands.doctor"),
        "survey": _entry_lazy("detector.survey.cli"),
        "eval-clips": _entry_lazy("detector.commands.evalclips.cli"),
        "api": _api,
    }
    if cmd not in table:
        print(f"citywatch: unknown command {cmd!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    return table[cmd](rest)


def _collect(rest: list[str]) -> int:
    module = COLLECT.get(rest[0]) if rest else None
    if module is None:
        print(f"usage: citywatch collect {'|'.join(COLLECT)} ...", file=sys.stderr)
        return 2
    if importlib.util.find_spec(module) is None:
        print(f"citywatch collect {rest[0]}: not in this installation ({module})", file=sys.stderr)
        return 2
    return _entry(module)(rest)


def _entry_lazy(module: str) -> Main:
    return lambda argv: _entry(module)(argv)


if __name__ == "__main__":
    sys.exit(main())
