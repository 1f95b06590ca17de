"""``citywatch survey INPUT --out DIR [--baseline DIR] [--publish] [--resume] [--ray ADDRESS]``

INPUT is a drone video with its DJI ``.SRT`` beside it, or a folder of photos with EXIF/XMP. Writes
``DIR/survey.geojson`` (one feature per object: class, confidence, position, uncertainty, evidence,
status new/known/gone), ``DIR/report.html`` (opens offline), ``DIR/flight.geojson``,
``DIR/evidence/`` and ``DIR/summary.json``. With ``--publish`` each new object of the case classes
opens one case through the outbox and MQTT. A killed run continues with ``--resume``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from detector.survey.dedup import DedupSettings
from detector.survey.errors import SurveyError
from detector.survey.observe import ModelSpec, SigmaSettings
from detector.survey.plan import GeoSettings
from detector.survey.publish import CaseSettings

log = logging.getLogger("citywatch.survey")


def resolve_model(
    ref: str | None,
    backend: str | None,
    conf: float,
    tile: int,
    overlap: float,
    threads: int | None,
    imgsz: int | None,
) -> tuple[ModelSpec, dict[str, str]]:
    """A manifest name (None: the default model) or a model file -> spec and its class -> rule label map."""
    from detector.contracts.artifacts import path_digest, verified_path
    from detector.contracts.manifest import ManifestError, load_manifest

    if ref is not None and Path(ref).exists():
        p = Path(ref)
        kind = backend or ("onnx" if p.suffix == ".onnx" else "openvino" if p.is_dir() else "ultralytics")
        labels = {"vehicle": "vehicle", "stall": "vendor", "litter": "litter", "structure": "structure"}
        return ModelSpec(
            str(p),
            kind,
            None,
            imgsz,
            conf,
            threads=threads,
            tile=tile,
            overlap=overlap,
            name=p.stem,
            sha256=path_digest(p),
        ), labels
    try:
        entry = load_manifest().get(ref)
        kind = backend or entry.backend
        path, digest = verified_path(entry, kind)  # type: ignore[arg-type]
    except ManifestError as exc:
        raise SurveyError(f"model {ref or '(default)'}: {exc}") from exc
    spec = ModelSpec(
        str(path),
        kind,
        tuple(entry.classes),
        imgsz or entry.imgsz,
        conf,
        threads=threads,
        tile=tile,
        overlap=overlap,
        name=entry.name,
        version=entry.version,
        sha256=digest,  # what was loaded: the export file's sha256, or an export folder's listing's
    )
    return spec, dict(entry.rule_labels)


def _mqtt(a: argparse.Namespace) -> tuple[object, Path]:
    from detector.delivery.mqtt import MqttSettings

    if a.config is not None:
        from detector.commands.run import mqtt_settings
        from detector.config import ConfigError, load_config

        try:
            loaded = load_config(a.config, strict=False)
        except ConfigError as exc:
            raise SurveyError(f"{a.config}: {exc}") from exc
        cfg = loaded.config
        box = cfg.outbox.dir if cfg.outbox.dir.is_absolute() else loaded.base_dir / cfg.outbox.dir
        return mqtt_settings(cfg), box / f"survey-{a.stream}.sqlite3"
    host, _, port = (a.mqtt or "127.0.0.1:1883").rpartition(":")
    return MqttSettings(
        host=host or "127.0.0.1", port=int(port), worker=f"survey-{a.stream}"
    ), a.out / "outbox.sqlite3"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="citywatch survey", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("input", type=Path, help="drone video (with its .SRT beside it) or a folder of photos")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--baseline", type=Path, help="output folder (or survey.geojson) of the last survey of the area"
    )
    p.add_argument("--publish", action="store_true", help="open one case per new object over MQTT")
    p.add_argument("--resume", action="store_true", help="continue a killed run in --out")
    p.add_argument("--force", action="store_true", help="discard an unfinished run in --out and start again")
    p.add_argument("--ray", metavar="ADDRESS", help="run frames on Ray: 'local', 'auto' or ray://host:10001")
    p.add_argument("--ray-actors", type=int, default=2, help="model actors on Ray (one model each)")
    g = p.add_argument_group("model and tiling")
    g.add_argument("--model", help="manifest name or model file (default: the manifest's default model)")
    g.add_argument("--backend", choices=["onnx", "ultralytics", "openvino"])
    g.add_argument("--conf", type=float, default=0.3, help="detection confidence threshold")
    g.add_argument("--imgsz", type=int, help="model input size (default: the model's)")
    g.add_argument("--tile", type=int, default=640, help="tile size in frame pixels")
    g.add_argument("--overlap", type=float, default=0.2, help="tile overlap ratio")
    g.add_argument("--threads", type=int, help="inference threads (default: all cores)")
    g = p.add_argument_group("sampling and geo-referencing")
    g.add_argument(
        "--every-m", type=float, help="sample a frame every this many metres (default: 60%% overlap)"
    )
    g.add_argument("--every-s", type=float, help="also sample at least every this many seconds")
    g.add_argument("--srt", type=Path, help="telemetry file when it is not beside the video")
    g.add_argument(
        "--latlon-order",
        choices=["lat,lon", "lon,lat"],
        help="order of GPS(a, b) in the .SRT when the values cannot tell it (default: decided per file; "
        "Matrice 300 style GPS(a,b,altM): lat,lon, older GPS(a,b,sats): lon,lat)",
    )
    g.add_argument("--height-m", type=float, help="height above ground for every frame")
    g.add_argument(
        "--ground-above-takeoff-m", type=float, default=0.0, help="survey ground minus take-off height"
    )
    g.add_argument(
        "--ground-elevation-m", type=float, help="ground height above sea level (absolute altitudes)"
    )
    g.add_argument("--focal-35mm", type=float, help="35 mm equivalent focal length (overrides telemetry)")
    g.add_argument("--focal-mm", type=float, help="real focal length in mm (needs --sensor-width-mm)")
    g.add_argument("--sensor-width-mm", type=float, help="sensor width in mm")
    g.add_argument("--timezone", default="UTC", help="time zone of the drone's clock (IANA name)")
    g.add_argument("--gps-sigma-m", type=float, default=2.0, help="1-sigma GPS error (RTK: about 0.05)")
    g.add_argument(
        "--cluster-m", type=float, default=3.0, help="DBSCAN eps: one object's views lie this close"
    )
    g.add_argument("--match-m", type=float, default=4.0, help="least distance gate for baseline matching")
    g = p.add_argument_group("cases (--publish)")
    g.add_argument("--stream", default="drone-survey", help="stream id the cases are filed under")
    g.add_argument(
        "--case-classes", default="structure", help="comma-separated classes that open cases when new"
    )
    g.add_argument("--config", type=Path, help="streams.yaml whose mqtt and outbox sections to use")
    g.add_argument("--mqtt", help="HOST:PORT of the broker when no --config (default 127.0.0.1:1883)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from detector.survey.publish import case_events, publish_events
    from detector.survey.runner import SurveyOptions, run_survey

    focal, kind = (
        (a.focal_35mm, "35mm") if a.focal_35mm else (a.focal_mm, "mm") if a.focal_mm else (None, "35mm")
    )
    geo = GeoSettings(
        a.height_m,
        a.ground_above_takeoff_m,
        a.ground_elevation_m,
        focal,
        kind,
        a.sensor_width_mm,
        timezone=a.timezone,
    )
    try:
        spec, labels = resolve_model(a.model, a.backend, a.conf, a.tile, a.overlap, a.threads, a.imgsz)
        cases = CaseSettings(
            a.stream,
            f"survey:{a.input.stem}"[:64],
            tuple(c.strip() for c in a.case_classes.split(",") if c.strip()),
            tuple(sorted(labels.items())),
        )
        opts = SurveyOptions(
            a.out,
            a.baseline,
            a.resume,
            a.force,
            a.srt,
            a.latlon_order,
            a.every_m,
            a.every_s,
            geo,
            SigmaSettings(gps_sigma_m=a.gps_sigma_m),
            DedupSettings(eps_m=a.cluster_m),
            a.match_m,
            cases,
            not a.quiet,
            a.ray,
            a.ray_actors,
        )
        res = run_survey(a.input, spec, opts)
        if a.publish:
            events = case_events(res.features, a.out, res.frame_sizes, res.model, cases)
            settings, outbox = _mqtt(a)
            res.summary["cases"] = publish_events(events, settings, outbox)  # type: ignore[arg-type]
            (a.out / "summary.json").write_text(json.dumps(res.summary, indent=1) + "\n", encoding="utf-8")
    except SurveyError as exc:
        print(f"citywatch survey: {exc}", file=sys.stderr)
        return 2
    s = res.summary
    fr = s["frames"]
    print(
        f"{s['input']}: {fr['sampled']} of {fr['candidates']} frames sampled ({fr['unplaced']} could not be "
        f"placed), {s['observations']} detections -> {s['objects']} objects; "
        f"{', '.join(f'{k} {v}' for k, v in s['counts'].items()) or 'nothing found'}"
    )
    for line in s["unplaced"]:
        print(f"  not placed: {line}")
    for w in s["telemetry_warnings"]:
        print(f"  telemetry: {w}")
    if s.get("latlon_order"):
        print(f"  positions read {s['latlon_order']['order']}: {s['latlon_order']['reason']}")
    if s.get("baseline"):
        b = s["baseline"]
        print(
            f"  baseline: {b['objects']} objects, {b['gone']} gone, {b['faint']} seen only faintly, "
            f"{b['not_covered']} outside this flight"
        )
    if "cases" in s:
        print(f"  cases: {s['cases']['published']} published, {s['cases']['pending']} waiting for the broker")
    rate = fr.get("frames_per_min")
    print(
        f"  {fr['elapsed_s']} s"
        + (f", {rate} frames/min" if rate else "")
        + f" -> {s['outputs']['geojson']}, "
        f"{s['outputs']['report']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
