"""The same per-frame work on Ray: Ray Data over the planned frames, one model per actor.

Frames go out in contiguous, flight-ordered batches; each actor builds the detector once from the
picklable spec, decodes its batch's frames itself (seeking into the video, which must be readable at
the same path on every node) and returns observations with their evidence JPEGs. The driver commits
each frame to the work folder as it arrives, exactly as a local run does.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from detector.survey.errors import SurveyError
from detector.survey.geo import MetricCRS
from detector.survey.inputs import read_frames
from detector.survey.observe import DetectorSpec, SigmaSettings, observe
from detector.survey.plan import PlannedFrame

log = logging.getLogger(__name__)


class FrameWorker:
    """A Ray Data actor: ``batch["frame"]`` (JSON of planned frames) -> ``{"result": JSON per frame}``."""

    def __init__(
        self, spec: DetectorSpec, kind: str, path: str, crs_at: tuple[float, float], sigma: SigmaSettings
    ) -> None:
        self.detect = spec.build()
        self.kind, self.path = kind, Path(path)
        self.crs = MetricCRS(*crs_at)
        self.sigma = sigma

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        frames = [PlannedFrame.from_dict(json.loads(str(s))) for s in batch["frame"]]
        by_index = {f.index: f for f in frames}
        out: list[str] = []
        for cand, img in read_frames(self.kind, self.path, [f.candidate for f in frames]):
            f = by_index[cand.index]
            obs, crops, bad = observe(f, img, self.detect(img, f), self.crs, self.sigma)
            out.append(
                json.dumps(
                    {
                        "index": f.index,
                        "obs": obs,
                        "bad": bad,
                        "crops": [base64.b64encode(c).decode("ascii") for c in crops],
                    }
                )
            )
        return {"result": out}


def process_on_ray(
    address: str,
    spec: DetectorSpec,
    kind: str,
    path: Path,
    frames: list[PlannedFrame],
    crs_at: tuple[float, float],
    sigma: SigmaSettings,
    *,
    actors: int = 1,
    batch: int = 4,
) -> Iterator[tuple[int, list[dict[str, Any]], list[bytes], int]]:
    """Yield ``(frame index, observations, crops, unplaced detections)`` as Ray finishes frames.

    ``address``: ``local`` starts a Ray on this machine; anything else is passed to ``ray.init``
    (``auto``, ``ray://head:10001``)."""
    try:
        import ray
    except ImportError as exc:
        raise SurveyError("--ray needs Ray: pip install 'ray[data]'") from exc
    if not frames:
        return
    if not ray.is_initialized():
        try:
            if address == "local":
                ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
            else:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise SurveyError(
                f"cannot reach the Ray cluster at {address!r}: {exc}; is `ray start --head` "
                "running there, or use --ray local"
            ) from exc
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the survey has its own progress bar
    items = [{"frame": json.dumps(f.as_dict())} for f in frames]
    ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), len(items) // max(1, batch))))
    results = ds.map_batches(
        FrameWorker,
        fn_constructor_args=(spec, kind, str(path.resolve()), crs_at, sigma),
        batch_size=batch,
        compute=ray.data.ActorPoolStrategy(size=max(1, actors)),
        num_cpus=1,
    )
    for row in results.iter_rows():
        rec = json.loads(row["result"])
        crops = [base64.b64decode(c) for c in rec["crops"]]
        yield int(rec["index"]), rec["obs"], crops, int(rec["bad"])
