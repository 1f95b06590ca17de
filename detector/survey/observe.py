"""One sampled frame -> detections -> geo-referenced observations with an evidence crop each.

A detector is built from a picklable spec (``spec.build()``), so the same spec makes the detector in
this process or in each Ray actor (one model per actor). :class:`ModelSpec` runs a real model with
sliced inference; tests use a spec whose detector returns known boxes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from detector.contracts.detections import Detections
from detector.evidence import render_evidence
from detector.survey.geo import MetricCRS, ground_offsets, offsets_to_latlon, pixel_sigma_m
from detector.survey.plan import PlannedFrame
from detector.survey.tiling import SlicedDetector

Image = npt.NDArray[np.uint8]
EDGE_PX = 3.0  # a box this close to the frame edge is cut by it (truncated)


class FrameDetector(Protocol):
    def __call__(self, image: Image, frame: PlannedFrame) -> Detections: ...


class DetectorSpec(Protocol):
    """Picklable recipe for a detector; ``describe()`` goes into the run record (resume checks it)."""

    def build(self) -> FrameDetector: ...

    def describe(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ModelSpec:
    """A model file run with sliced inference."""

    path: str
    backend: str
    class_names: tuple[str, ...] | None = None
    imgsz: int | None = None
    conf: float = 0.25
    iou: float = 0.5
    threads: int | None = None
    tile: int = 640
    overlap: float = 0.2
    batch: int = 8
    name: str = ""
    version: str = "0.0.0"
    sha256: str | None = None

    def build(self) -> FrameDetector:
        from detector.inference import load_backend

        backend = load_backend(
            self.backend, self.path, self.class_names, self.imgsz, self.conf, self.iou, self.threads
        )
        sliced = SlicedDetector(backend, self.tile, self.overlap, batch=self.batch)

        def detect(image: Image, frame: PlannedFrame) -> Detections:
            return sliced(image)

        return detect

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.name or Path(self.path).name,
            "version": self.version,
            "sha256": self.sha256,
            "backend": self.backend,
            "imgsz": self.imgsz,
            "conf": self.conf,
            "iou": self.iou,
            "tile": self.tile,
            "overlap": self.overlap,
        }


@dataclass(frozen=True)
class SigmaSettings:
    gps_sigma_m: float = 2.0
    height_sigma_frac: float = 0.05
    yaw_sigma_deg: float = 2.0
    pitch_sigma_deg: float = 1.0


def evidence_crop(image: Image, box: np.ndarray, label: str, max_width: int = 480) -> bytes:
    """The box with context around it (at least 48 px, 75 % of the box), drawn, as a JPEG."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    m = max(48.0, 0.75 * max(x2 - x1, y2 - y1))
    cx1, cy1 = int(max(0, x1 - m)), int(max(0, y1 - m))
    cx2, cy2 = int(min(w, x2 + m)), int(min(h, y2 + m))
    crop = np.ascontiguousarray(image[cy1:cy2, cx1:cx2])
    ev = render_evidence(crop, [x1 - cx1, y1 - cy1, x2 - cx1, y2 - cy1], None, label, max_width, 85)
    return ev.jpeg


def observe(
    frame: PlannedFrame,
    image: Image,
    dets: Detections,
    crs: MetricCRS,
    sigma: SigmaSettings = SigmaSettings(),
) -> tuple[list[dict[str, Any]], list[bytes], int]:
    """Observations (JSON-ready dicts, in detection order), their evidence JPEGs, and how many detections
    could not be placed (rays that miss the ground)."""
    if len(dets) == 0:
        return [], [], 0
    cam, pose = frame.camera, frame.pose
    xyxy = dets.xyxy.astype(np.float64)
    cu, cv = (xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2
    east, north, valid = ground_offsets(cam, pose, cu, cv)
    lats, lons = offsets_to_latlon(pose.lat, pose.lon, east, north)
    xs, ys = crs.to_xy(lats, lons)
    # size on the ground: the box's diagonal measured through two ground points
    e1, n1, _ = ground_offsets(cam, pose, xyxy[:, 0], xyxy[:, 1])
    e2, n2, _ = ground_offsets(cam, pose, xyxy[:, 2], xyxy[:, 3])
    size_m = np.hypot(e2 - e1, n2 - n1) / np.sqrt(2.0)
    sig = pixel_sigma_m(
        cam,
        pose,
        east,
        north,
        size_m,
        gps_sigma_m=sigma.gps_sigma_m,
        height_sigma_frac=sigma.height_sigma_frac,
        yaw_sigma_deg=sigma.yaw_sigma_deg,
        pitch_sigma_deg=sigma.pitch_sigma_deg,
    )
    trunc = (
        (xyxy[:, 0] <= EDGE_PX)
        | (xyxy[:, 1] <= EDGE_PX)
        | (xyxy[:, 2] >= cam.width - EDGE_PX)
        | (xyxy[:, 3] >= cam.height - EDGE_PX)
    )
    half_diag = float(np.hypot(cam.width, cam.height)) / 2.0
    centre = np.hypot(cu - cam.width / 2, cv - cam.height / 2) / half_diag
    names = dets.class_name
    out: list[dict[str, Any]] = []
    crops: list[bytes] = []
    for i in range(len(dets)):
        if not valid[i]:
            continue
        label = f"{names[i]} {float(dets.confidence[i]):.2f}"
        out.append(
            {
                "frame": frame.index,
                "k": len(out),
                "cls": str(names[i]),
                "conf": round(float(dets.confidence[i]), 4),
                "box": [round(float(v), 1) for v in xyxy[i]],
                "lat": round(float(lats[i]), 8),
                "lon": round(float(lons[i]), 8),
                "x": round(float(xs[i]), 3),
                "y": round(float(ys[i]), 3),
                "sigma_m": round(float(sig[i]), 3),
                "size_m": round(float(size_m[i]), 3),
                "truncated": bool(trunc[i]),
                "centre": round(float(centre[i]), 4),
                "oblique": pose.oblique,
                "ts": frame.ts,
            }
        )
        crops.append(evidence_crop(image, xyxy[i], label))
    return out, crops, int((~valid).sum())
