"""Survey outputs: ``survey.geojson`` (one feature per object), ``flight.geojson`` and ``report.html``.

The GeoJSON holds only what the survey found, never run times, so an interrupted and resumed run
writes the same bytes as an uninterrupted one. The HTML report opens offline: the map is inline SVG
(flight path, footprints, objects by status) and thumbnails are embedded as data URIs.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from detector.survey.change import BaselineObject
from detector.survey.geo import DATUM, F64, MetricCRS

STATUS_COLOUR = {"new": "#d62728", "known": "#1f77b4", "gone": "#7f7f7f"}


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def feature(props: dict[str, Any], lat: float, lon: float) -> dict[str, Any]:
    return {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [round(lon, 8), round(lat, 8)]},
        "properties": props,
    }


def gone_feature(b: BaselineObject) -> dict[str, Any]:
    props = {
        "id": f"gone-{b.id}",
        "class": b.cls,
        "label": b.properties.get("label"),
        "status": "gone",
        "confidence": b.properties.get("confidence"),
        "uncertainty_m": b.sigma_m,
        "size_m": b.size_m,
        "baseline_id": b.id,
        "evidence": None,
        "baseline_evidence": b.properties.get("evidence"),
        "first_seen": b.properties.get("first_seen"),
        "last_seen": b.properties.get("last_seen"),
    }
    return feature(props, b.lat, b.lon)


def write_geojson(path: Path, features: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    doc = {"type": "FeatureCollection", "datum": DATUM, **meta, "features": features}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def flight_geojson(
    path: Path,
    track: Sequence[tuple[float, float]],
    footprints: Sequence[tuple[int, F64]],
    crs: MetricCRS,
    flight: dict[str, Any] | None = None,
) -> None:
    """The flight path (with ``flight``'s metadata, e.g. ``latlon_order``) and each frame's footprint."""
    feats: list[dict[str, Any]] = [
        {
            "type": "Feature",
            "properties": {"kind": "flight_path", **(flight or {})},
            "geometry": {
                "type": "LineString",
                "coordinates": [[round(lon, 8), round(lat, 8)] for lat, lon in track],
            },
        }
    ]
    for idx, poly in footprints:
        lat, lon = crs.to_latlon(poly[:, 0], poly[:, 1])
        ring = [[round(float(a), 8), round(float(b), 8)] for a, b in zip(lon, lat, strict=True)]
        feats.append(
            {
                "type": "Feature",
                "properties": {"kind": "footprint", "frame": idx},
                "geometry": {"type": "Polygon", "coordinates": [[*ring, ring[0]]]},
            }
        )
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}) + "\n", encoding="utf-8")


def _thumb(out_dir: Path, rel: str | None) -> str:
    if not rel:
        return ""
    p = out_dir / rel
    if not p.is_file():
        return ""
    data = base64.b64encode(p.read_bytes()).decode("ascii")
    return f'<img src="data:image/jpeg;base64,{data}" alt="{html.escape(rel)}">'


def write_html(
    path: Path,
    title: str,
    features: list[dict[str, Any]],
    track_xy: F64,
    footprints: Sequence[F64],
    crs: MetricCRS,
    summary: dict[str, Any],
) -> None:
    """A self-contained report: summary, an SVG map in metres (north up) and a table with thumbnails."""
    pts: list[tuple[float, float, dict[str, Any]]] = []
    for f in features:
        lon, lat = f["geometry"]["coordinates"]
        x, y = crs.to_xy(lat, lon)
        pts.append((float(x), float(y), f["properties"]))
    every = [track_xy] + list(footprints) + ([np.array([[p[0], p[1]] for p in pts])] if pts else [])
    allxy = np.vstack([a for a in every if len(a)])
    x0, y0 = (float(v) - 10.0 for v in allxy.min(axis=0))
    x1, y1 = (float(v) + 10.0 for v in allxy.max(axis=0))
    scale = 900.0 / max(x1 - x0, y1 - y0, 1.0)
    w, h = (x1 - x0) * scale, (y1 - y0) * scale

    def sx(x: Any) -> float:
        return round((float(x) - x0) * scale, 1)

    def sy(y: Any) -> float:
        return round((y1 - float(y)) * scale, 1)

    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0f}" height="{h:.0f}" '
        f'viewBox="0 0 {w:.0f} {h:.0f}" style="background:#f4f1ea">'
    ]
    for poly in footprints:
        pp = " ".join(f"{sx(a)},{sy(b)}" for a, b in poly)
        svg.append(
            f'<polygon points="{pp}" fill="#9ecae1" fill-opacity="0.08" stroke="#9ecae1" stroke-width="0.5"/>'
        )
    if len(track_xy):
        pp = " ".join(f"{sx(a)},{sy(b)}" for a, b in track_xy)
        svg.append(
            f'<polyline points="{pp}" fill="none" stroke="#333" stroke-width="1.5" stroke-dasharray="4 3"/>'
        )
    for px, py, p in pts:
        c = STATUS_COLOUR.get(str(p.get("status")), "#000")
        r = max(4.0, float(p.get("uncertainty_m") or 1) * scale)
        tip = html.escape(f"{p.get('id')} {p.get('class')} {p.get('status')}")
        svg.append(
            f'<circle cx="{sx(px)}" cy="{sy(py)}" r="{r:.1f}" fill="{c}" fill-opacity="0.35" stroke="{c}">'
            f"<title>{tip}</title></circle>"
        )
        svg.append(
            f'<text x="{sx(px) + 5}" y="{sy(py) - 5}" font-size="10" fill="{c}">'
            f"{html.escape(str(p['id']))}</text>"
        )
    bar = 10 ** int(np.floor(np.log10(max((x1 - x0) / 4, 1))))
    svg.append(
        f'<line x1="10" y1="{h - 10:.0f}" x2="{10 + bar * scale:.0f}" y2="{h - 10:.0f}" stroke="#000" '
        f'stroke-width="2"/><text x="10" y="{h - 14:.0f}" font-size="10">{bar} m</text>'
    )
    svg.append(f'<text x="{w - 20:.0f}" y="16" font-size="12">N&#8593;</text></svg>')
    rows = []
    out_dir = path.parent
    for _, _, p in pts:
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{html.escape(str(p.get(k, '')))}</td>"
                for k in ("id", "status", "class", "confidence", "uncertainty_m", "views", "first_seen")
            )
            + f"<td>{_thumb(out_dir, p.get('evidence'))}</td></tr>"
        )
    summ = "".join(
        f"<li><b>{html.escape(str(k))}</b>: {html.escape(json.dumps(v, ensure_ascii=False))}</li>"
        for k, v in summary.items()
    )
    order = summary.get("latlon_order")
    order_line = (
        f"<p>Telemetry positions read as <b>{html.escape(str(order.get('order')))}</b>: "
        f"{html.escape(str(order.get('reason')))}.</p>"
        if isinstance(order, dict)
        else ""
    )
    legend = " ".join(f'<span style="color:{c}">&#9679; {s}</span>' for s, c in STATUS_COLOUR.items())
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;
padding:3px 6px;font-size:13px}}img{{max-width:160px;max-height:160px}}</style></head><body>
<h1>{html.escape(title)}</h1>{order_line}<ul>{summ}</ul><p>{legend}; dashed line: flight path;
blue outlines: frames looked at;
circle radius: position uncertainty. Positions in {DATUM}; map in {html.escape(crs.name)} metres.</p>
{"".join(svg)}
<table><tr><th>id</th><th>status</th><th>class</th><th>confidence</th><th>uncertainty m</th><th>views</th>
<th>first seen</th><th>evidence</th></tr>{"".join(rows)}</table></body></html>
"""
    path.write_text(doc, encoding="utf-8")
