"""Run a survey: plan -> per-frame detection and geo-referencing (resumable) -> objects -> change -> outputs.

    result = run_survey("DJI_0001.MP4", ModelSpec(...), SurveyOptions(out=Path("out/")))

Frames are processed here or on Ray (``ray_address``); either way each processed frame is committed
to the work folder at once, so a killed run resumes with ``resume=True`` and finishes with the same
``survey.geojson`` as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from detector.survey.change import ChangeResult, compare, load_baseline
from detector.survey.dedup import DedupSettings, SurveyObject, deduplicate
from detector.survey.geo import DATUM, F64, MetricCRS, footprint, offsets_to_latlon
from detector.survey.inputs import open_input, read_frames
from detector.survey.observe import DetectorSpec, SigmaSettings, observe
from detector.survey.plan import GeoSettings, Plan, PlannedFrame, plan_frames
from detector.survey.publish import CaseSettings
from detector.survey.report import feature, flight_geojson, gone_feature, iso, write_geojson, write_html
from detector.survey.store import WorkStore, file_identity

log = logging.getLogger("citywatch.survey")
FrameResult = tuple[int, list[dict[str, Any]], list[bytes], int]


@dataclass
class SurveyOptions:
    out: Path
    baseline: Path | None = None
    resume: bool = False
    force: bool = False
    srt: Path | None = None
    latlon_order: str | None = None
    every_m: float | None = None
    every_s: float | None = None
    geo: GeoSettings = field(default_factory=GeoSettings)
    sigma: SigmaSettings = field(default_factory=SigmaSettings)
    dedup: DedupSettings = field(default_factory=DedupSettings)
    match_m: float = 4.0
    cases: CaseSettings = field(default_factory=CaseSettings)
    progress: bool = True
    ray_address: str | None = None
    ray_actors: int = 1
    ray_batch: int = 4
    on_frame: Callable[[int], None] | None = None  # called after each committed frame (tests, progress)


@dataclass
class SurveyResult:
    features: list[dict[str, Any]]
    summary: dict[str, Any]
    geojson: Path
    report: Path
    frame_sizes: dict[int, tuple[int, int]]
    model: dict[str, Any]


def _process_local(
    spec: DetectorSpec,
    kind: str,
    path: Path,
    frames: list[PlannedFrame],
    crs: MetricCRS,
    sigma: SigmaSettings,
) -> Iterator[FrameResult]:
    detect = spec.build()
    by_index = {f.index: f for f in frames}
    for cand, img in read_frames(kind, path, [f.candidate for f in frames]):
        frame = by_index[cand.index]
        obs, crops, bad = observe(frame, img, detect(img, frame), crs, sigma)
        yield frame.index, obs, crops, bad


def _footprints(frames: list[PlannedFrame], crs: MetricCRS) -> list[tuple[int, F64]]:
    out: list[tuple[int, F64]] = []
    for f in frames:
        quad = footprint(f.camera, f.pose)
        lats, lons = offsets_to_latlon(f.pose.lat, f.pose.lon, quad[:, 0], quad[:, 1])
        x, y = crs.to_xy(lats, lons)
        out.append((f.index, np.stack([x, y], axis=1)))
    return out


def _object_feature(
    o: SurveyObject, oid: str, status: str, baseline_id: str | None, crs: MetricCRS, labels: dict[str, str]
) -> dict[str, Any]:
    lat, lon = crs.to_latlon(o.x, o.y)
    o.lat, o.lon = float(lat), float(lon)
    props = {
        "id": oid,
        "class": o.cls,
        "label": labels.get(o.cls),
        "status": status,
        "confirmed": True,  # False: a baseline object this flight saw only weakly (change.py)
        "confidence": round(o.conf, 4),
        "confidence_median": round(o.conf_median, 4),
        "uncertainty_m": round(o.sigma_m, 2),
        "size_m": round(o.size_m, 2),
        "views": len(o.frames),
        "expected_views": o.expected_views,
        "oblique": o.oblique,
        "method": "oblique ray cast" if o.oblique else "nadir pinhole",
        "baseline_id": baseline_id,
        "evidence": f"evidence/{oid}.jpg",
        "best_frame": int(o.best["frame"]),
        "best_box": o.best["box"],
        "first_seen": iso(o.first_ts),
        "last_seen": iso(o.last_ts),
        "first_seen_ts": o.first_ts,
        "last_seen_ts": o.last_ts,
    }
    return feature(props, o.lat, o.lon)


def run_survey(input_path: str | Path, spec: DetectorSpec, opts: SurveyOptions) -> SurveyResult:
    """Run (or resume) a survey of ``input_path`` into ``opts.out``; see the module docstring."""
    t_start = time.monotonic()
    inp = open_input(input_path, opts.srt, opts.latlon_order)
    plan = plan_frames(inp, opts.geo, opts.every_m, opts.every_s)
    baseline = load_baseline(opts.baseline) if opts.baseline is not None else None
    first = plan.frames[0].pose
    crs = MetricCRS(first.lat, first.lon)
    opts.out.mkdir(parents=True, exist_ok=True)
    store = WorkStore(opts.out)
    run = {
        "input": file_identity(inp.path),
        "telemetry": file_identity(inp.srt) if inp.srt else None,
        "detector": spec.describe(),
        "geo": opts.geo.as_dict(),
        "sigma": opts.sigma.__dict__,
        "sampling": {"every_m": opts.every_m, "every_s": opts.every_s},
        "crs": crs.epsg,
        "frames": [f.index for f in plan.frames],
    }
    done = store.start(json.loads(json.dumps(run)), resume=opts.resume, force=opts.force)
    todo = [f for f in plan.frames if f.index not in done]
    bar = None
    if opts.progress:
        from tqdm import tqdm

        bar = tqdm(
            total=len(plan.frames),
            initial=len(plan.frames) - len(todo),
            unit="frame",
            desc=f"survey {inp.name}",
            file=sys.stderr,
            dynamic_ncols=True,
        )
    if opts.ray_address is not None:
        from detector.survey.ray_runner import process_on_ray

        results: Iterator[FrameResult] = process_on_ray(
            opts.ray_address,
            spec,
            inp.kind,
            inp.path,
            todo,
            (first.lat, first.lon),
            opts.sigma,
            actors=opts.ray_actors,
            batch=opts.ray_batch,
        )
    else:
        results = _process_local(spec, inp.kind, inp.path, todo, crs, opts.sigma)
    t_frames = time.monotonic()
    processed = 0
    for index, obs, crops, bad in results:
        store.record(index, obs, crops, bad)
        processed += 1
        if bar is not None:
            bar.update(1)
        if opts.on_frame is not None:
            opts.on_frame(index)
    frames_s = time.monotonic() - t_frames
    if bar is not None:
        bar.close()
    return _finish(
        inp.name,
        plan,
        store,
        crs,
        baseline,
        opts,
        spec,
        {
            "frames_processed_now": processed,
            "frames_resumed": len(done),
            "elapsed_s": round(time.monotonic() - t_start, 2),
            "frames_per_min": round(60.0 * processed / frames_s, 2) if processed and frames_s > 0 else None,
        },
        inp.telemetry.warnings,
        len(inp.candidates),
        inp.telemetry.latlon_info(),
    )


def _finish(
    name: str,
    plan: Plan,
    store: WorkStore,
    crs: MetricCRS,
    baseline: Any,
    opts: SurveyOptions,
    spec: DetectorSpec,
    timing: dict[str, Any],
    warnings: list[str],
    candidates: int,
    latlon: dict[str, str],
) -> SurveyResult:
    records = {int(r["index"]): r for r in store.records()}
    missing = [f.index for f in plan.frames if f.index not in records]
    flight_order = [(f.index, records[f.index]["obs"]) for f in plan.frames if f.index in records]
    footprints = _footprints([f for f in plan.frames if f.index in records], crs)
    objs, weak, stats = deduplicate(flight_order, footprints, opts.dedup)
    change: ChangeResult | None = None
    if baseline is not None:
        change = compare(objs, baseline, crs, footprints, opts.match_m, weak=weak)
    labels = dict(opts.cases.rule_labels)
    ev_dir = opts.out / "evidence"
    shutil.rmtree(ev_dir, ignore_errors=True)
    ev_dir.mkdir()
    features: list[dict[str, Any]] = []
    taken = {str(b.id) for b in baseline} if baseline else set()
    first_ts = min((f.ts for f in plan.frames), default=0.0)
    prefix = f"{name[:32]}-{datetime.fromtimestamp(first_ts, UTC):%Y%m%d%H%M}"
    for n, o in enumerate(objs, start=1):
        status = change.status[n - 1] if change else "new"
        bid = change.matched[n - 1] if change else None
        oid = bid if bid is not None else f"{prefix}-{n:04d}"
        while bid is None and oid in taken:  # same name and minute as a baseline survey
            oid += "b"
        features.append(_object_feature(o, oid, status, bid, crs, labels))
        if change and change.class_was[n - 1]:
            features[-1]["properties"]["baseline_class"] = change.class_was[n - 1]
        shutil.copyfile(opts.out / o.best["crop"], ev_dir / f"{oid}.jpg")
    if change:
        features += [gone_feature(b) for b in change.gone]
        for b, w in change.faint:  # weakly seen again: still there as far as this flight can tell
            features.append(_object_feature(w, str(b.id), "known", str(b.id), crs, labels))
            props = features[-1]["properties"]
            props.update(confirmed=False, seen_as=w.cls, label=labels.get(b.cls))
            props["class"] = b.cls  # the thing on the ground is the baseline's; this flight saw a sign of it
            shutil.copyfile(opts.out / w.best["crop"], ev_dir / f"{b.id}.jpg")
    counts: dict[str, int] = {}
    for f in features:
        key = f"{f['properties']['status']}:{f['properties']['class']}"
        counts[key] = counts.get(key, 0) + 1
    meta = {
        "survey": {
            "input": name,
            "frames_sampled": len(plan.frames),
            "frames_missing": missing,
            "baseline": str(opts.baseline) if opts.baseline else None,
            "latlon_order": latlon,  # which way round the telemetry's GPS(a, b) was read, and why
        },
        "method": {
            "georeferencing": "pinhole ray cast from the telemetry position to flat ground (height above "
            "ground, yaw, gimbal pitch); offsets carried on the ellipsoid with "
            "pyproj Geod(ellps=WGS84).fwd",
            "height": sorted({f.pose.height_source for f in plan.frames}),
            "yaw": sorted({f.pose.yaw_source for f in plan.frames}),
            "dedup": f"tracks within {opts.dedup.gate_m} m between frames, DBSCAN eps {opts.dedup.eps_m} m",
            "metric_crs": crs.name,
            "uncertainty": "1-sigma horizontal, metres",
            "detector": spec.describe(),
            "notes": plan.notes,
        },
    }
    geo_path = opts.out / "survey.geojson"
    write_geojson(geo_path, features, meta)
    track = [(f.pose.lat, f.pose.lon) for f in plan.frames]
    flight_geojson(opts.out / "flight.geojson", track, footprints, crs, {"latlon_order": latlon})
    tx, ty = crs.to_xy([p[0] for p in track], [p[1] for p in track])
    summary = {
        "input": name,
        "frames": {
            "candidates": candidates,
            "placed": plan.placed,
            "sampled": len(plan.frames),
            "unplaced": len(plan.unplaced),
            **timing,
        },
        "unplaced": plan.unplaced_summary(),
        "telemetry_warnings": warnings,
        "latlon_order": latlon,
        **stats,
        "counts": dict(sorted(counts.items())),
        "baseline": None
        if change is None
        else {
            "objects": change.baseline_count,
            "gone": len(change.gone),
            "not_covered": len(change.not_covered),
            "faint": len(change.faint),
        },
        "datum": DATUM,
        "outputs": {"geojson": str(geo_path), "report": str(opts.out / "report.html")},
    }
    report = opts.out / "report.html"
    write_html(
        report,
        f"citywatch survey: {name}",
        features,
        np.stack([tx, ty], axis=1),
        [p for _, p in footprints],
        crs,
        summary,
    )
    (opts.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    sizes = {f.index: (f.camera.width, f.camera.height) for f in plan.frames}
    d = spec.describe()
    model = {
        "name": str(d.get("model", "unknown")),
        "version": str(d.get("version", "0.0.0")),
        "sha256": d.get("sha256"),
    }
    return SurveyResult(features, summary, geo_path, report, sizes, model)
