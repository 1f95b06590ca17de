"""The zoomed pass (detector/inference/zoom.py): it confirms the native pass's boxes and adds none."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import pytest

from detector.config.model import ModelConfig
from detector.contracts.detections import NATIVE_CONFIDENCE, Detections
from detector.inference.base import Image, InferenceBackend
from detector.inference.zoom import CONFIRM_CEILING, CONFIRM_FLOOR, PER_BATCH, ZoomBackend, confirm

NAMES = ["car", "truck", "person"]
VEHICLE = {0: 0, 1: 0}  # car and truck are one group

Row = tuple[float, float, float, float, float, int]


def dets(rows: Sequence[Row]) -> Detections:
    if not rows:
        return Detections.empty()
    arr = np.asarray(rows, np.float32)
    return Detections.from_arrays(arr[:, :4], arr[:, 4], arr[:, 5].astype(np.int64), NAMES)


def rows(d: Detections) -> list[Row]:
    return [
        (*(round(float(v)) for v in box), round(float(s), 2), int(c))  # type: ignore[misc]
        for box, s, c in zip(d.xyxy, d.confidence, d.class_id, strict=True)
    ]


@pytest.mark.parametrize(
    ("native", "zoomed", "expected"),
    [
        # a far car the native pass sees faintly, the zoomed pass well: the native box at the zoomed score
        ([(800, 100, 830, 120, 0.22, 0)], [(801, 101, 831, 121, 0.62, 0)], [(800, 100, 830, 120, 0.62, 0)]),
        # a car the zoomed pass reads as a truck: one vehicle group, confirmed
        ([(800, 100, 830, 120, 0.22, 0)], [(801, 101, 831, 121, 0.55, 1)], [(800, 100, 830, 120, 0.55, 0)]),
        # a near lorry the zoomed pass loses keeps its native score
        ([(100, 300, 500, 700, 0.60, 1)], [], [(100, 300, 500, 700, 0.60, 1)]),
        # a zoomed score below the native one never lowers it
        ([(100, 100, 140, 130, 0.70, 0)], [(100, 100, 140, 130, 0.40, 0)], [(100, 100, 140, 130, 0.70, 0)]),
        # a box the native pass is already sure of (>= CONFIRM_CEILING) is not asked about
        ([(100, 100, 140, 130, 0.55, 0)], [(100, 100, 140, 130, 0.90, 0)], [(100, 100, 140, 130, 0.55, 0)]),
        # something only the zoomed pass sees (a sign read as a far car) is dropped
        ([], [(600, 20, 620, 40, 0.66, 0)], []),
        # a faint native box the zoomed pass does not confirm stays under conf and is dropped
        ([(800, 100, 830, 120, 0.22, 0)], [(600, 20, 620, 40, 0.66, 0)], []),
        # a person where the zoomed pass sees a car: other group, not confirmed
        ([(100, 100, 140, 130, 0.22, 2)], [(100, 100, 140, 130, 0.90, 0)], []),
        # overlap under IoU 0.5: another object, not confirmed
        ([(100, 100, 140, 130, 0.22, 0)], [(130, 100, 170, 130, 0.90, 0)], []),
        # the result is best first
        (
            [(0, 0, 10, 10, 0.30, 0), (50, 50, 60, 60, 0.22, 0)],
            [(50, 50, 60, 60, 0.80, 0)],
            [(50, 50, 60, 60, 0.80, 0), (0, 0, 10, 10, 0.30, 0)],
        ),
    ],
)
def test_confirm(native: list[Row], zoomed: list[Row], expected: list[Row]) -> None:
    assert CONFIRM_CEILING == 0.5
    out = confirm(dets(native), dets(zoomed), VEHICLE, conf=0.25)
    assert rows(out) == expected
    # the native score stays beside the confirmed one (vetoes judge by it)
    native_of = {tuple(round(v) for v in r[:4]): r[4] for r in native}
    kept = [native_of[tuple(round(float(v)) for v in box)] for box in out.xyxy]
    assert [round(float(v), 2) for v in out.data[NATIVE_CONFIDENCE]] == kept


class ScriptedBackend(InferenceBackend):
    """Returns the same detections for every image, above its own conf; records the batch sizes."""

    name = "onnx"

    def __init__(self, imgsz: int, found: list[Row], names: Sequence[str] = NAMES) -> None:
        self.class_names, self.imgsz, self.conf, self.iou = list(names), imgsz, 0.25, 0.5
        self.found = found
        self.calls: list[int] = []

    def infer(self, images: Sequence[Image]) -> list[Detections]:
        self.calls.append(len(images))
        return [dets([r for r in self.found if r[4] >= self.conf]) for _ in images]


def test_zoom_backend_runs_both_passes_once_per_batch_and_lowers_the_native_floor() -> None:
    inner = ScriptedBackend(640, [(800, 100, 830, 120, 0.22, 0), (100, 300, 500, 700, 0.6, 1)])
    big = ScriptedBackend(960, [(801, 101, 831, 121, 0.57, 0), (0, 0, 40, 30, 0.9, 0)])
    zoom = ZoomBackend(inner, big)
    assert inner.conf == CONFIRM_FLOOR and zoom.conf == 0.25 and zoom.imgsz == 640
    zoom.class_groups = ((0, 1),)
    assert inner.class_groups == big.class_groups == ((0, 1),)
    out = zoom.infer([np.zeros((720, 1280, 3), np.uint8)] * 3)
    assert inner.calls == big.calls == [3]
    assert [rows(d) for d in out] == [[(100, 300, 500, 700, 0.6, 1), (800, 100, 830, 120, 0.57, 0)]] * 3
    assert (zoom.frames, zoom.zoomed_frames) == (3, 3)


class PerImageBackend(ScriptedBackend):
    """Returns, for each image, the detections scripted for its first pixel value."""

    def __init__(self, imgsz: int, by_pixel: dict[int, list[Row]]) -> None:
        super().__init__(imgsz, [])
        self.by_pixel = by_pixel

    def infer(self, images: Sequence[Image]) -> list[Detections]:
        self.calls.append(len(images))
        return [dets([r for r in self.by_pixel[int(img[0, 0, 0])] if r[4] >= self.conf]) for img in images]


def test_zoom_backend_asks_only_about_frames_with_an_unsure_box() -> None:
    """Frame 0: only a sure car (0.8); frame 1: nothing; frame 2: a far car at 0.3. Only frame 2 goes to
    the zoomed pass."""
    near, far = (100, 300, 500, 700, 0.8, 0), (800, 100, 830, 120, 0.3, 0)
    inner = PerImageBackend(640, {0: [near], 1: [], 2: [near, far]})
    big = PerImageBackend(960, {2: [(100, 300, 500, 700, 0.95, 0), (801, 101, 831, 121, 0.7, 0)]})
    zoom = ZoomBackend(inner, big)
    frames = [np.full((720, 1280, 3), value, np.uint8) for value in (0, 1, 2)]
    out = zoom.infer(frames)
    assert big.calls == [1] and (zoom.frames, zoom.zoomed_frames) == (3, 1)
    assert [rows(d) for d in out] == [[near], [], [near, (800, 100, 830, 120, 0.7, 0)]]
    big.calls.clear()
    zoom.infer(frames[:2])
    assert big.calls == []  # nothing unsure: the zoomed pass does not run at all


def test_zoom_backend_refusals() -> None:
    with pytest.raises(ValueError, match="larger"):
        ZoomBackend(ScriptedBackend(640, []), ScriptedBackend(640, []))
    with pytest.raises(ValueError, match="same classes"):
        ZoomBackend(ScriptedBackend(640, []), ScriptedBackend(960, [], ["car", "person", "truck"]))


def test_model_config_zoom() -> None:
    assert ModelConfig().zoom_imgsz is None and ModelConfig(zoom_imgsz=960).zoom_imgsz == 960
    with pytest.raises(ValueError, match="zoom_imgsz 950 is not a multiple of 32"):
        ModelConfig(zoom_imgsz=950)
    with pytest.raises(ValueError, match="zoom_imgsz is not set"):
        ModelConfig(zoom_model="yolov8n-coco-far")
    assert ModelConfig(zoom_imgsz=960, zoom_model="yolov8n-coco-far").zoom_model == "yolov8n-coco-far"


class TimedBackend(ScriptedBackend):
    """Returns, for each image, the detections scripted for its first pixel value (a frame number)."""

    def __init__(self, imgsz: int, script: dict[int, list[Row]]) -> None:
        super().__init__(imgsz, [])
        self.script = script
        self.seen: list[int] = []  # the frame numbers asked about

    def infer(self, images: Sequence[Image]) -> list[Detections]:
        self.calls.append(len(images))
        self.seen += [int(img[0, 0, 0]) for img in images]
        return [
            dets([r for r in self.script.get(int(img[0, 0, 0]), []) if r[4] >= self.conf]) for img in images
        ]


def frame(n: int) -> np.ndarray:
    return np.full((72, 128, 3), n, np.uint8)


FAR = (800, 100, 830, 120)  # a far parked car the native pass sees at 0.3, the zoomed pass at 0.7


def far_car(n: int, dx: int = 0, score: float = 0.3) -> Row:
    return (FAR[0] + dx * n, FAR[1], FAR[2] + dx * n, FAR[3], score, 0)


@pytest.mark.parametrize(
    ("dx", "asked_at"),
    [
        # parked: confirmed once; the remembered score holds at every sample until it is 60 s old
        (0, [0.0, 62.0]),
        # moving (8 px a sample): never where it was confirmed, so a pass every 10 s (every_s), no more
        (8, [0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0]),
    ],
)
def test_a_stream_gets_a_zoomed_pass_at_most_every_s_and_remembers_what_it_confirmed(
    dx: int, asked_at: list[float]
) -> None:
    samples = range(0, 38)  # every 2 s for 74 s
    inner = TimedBackend(640, {n: [far_car(n, dx)] for n in samples})
    big = TimedBackend(960, {n: [far_car(n, dx, 0.7)] for n in samples})
    zoom = ZoomBackend(inner, big, every_s=10.0)
    zoom.class_groups = ((0, 1),)
    scores = []
    for n in samples[::2]:  # batches of 2 frames, as replay and the service send them
        batch = [n, n + 1]
        out = zoom.infer_streams([frame(m) for m in batch], [("cam-1", 2.0 * m) for m in batch])
        scores += [round(float(d.confidence[0]), 2) if len(d) else None for d in out]
    asked = [2.0 * n for n in big.seen]
    remembered = [0.7] * len(scores)
    if dx:  # a moving car keeps its confirmed score only in the frame the pass looked at
        remembered = [0.7 if 2.0 * n in asked_at else 0.3 for n in samples]
    assert asked == asked_at
    assert scores == remembered


def test_the_memory_is_per_stream_and_forgotten_when_time_goes_back() -> None:
    inner = TimedBackend(640, {0: [far_car(0)], 1: [far_car(0)]})
    big = TimedBackend(960, {0: [far_car(0, score=0.7)], 1: []})  # frame 1: the pass sees nothing there
    zoom = ZoomBackend(inner, big, every_s=10.0)
    zoom.class_groups = ((0, 1),)
    # two streams in one batch: each gets its own pass and its own memory
    out = zoom.infer_streams([frame(0), frame(1)], [("a", 100.0), ("b", 100.0)])
    assert [rows(d) for d in out] == [[(*FAR, 0.7, 0)], [(*FAR, 0.3, 0)]] and zoom.zoomed_frames == 2
    out = zoom.infer_streams([frame(1), frame(1)], [("a", 102.0), ("b", 102.0)])
    assert zoom.zoomed_frames == 2  # both remembered: no pass
    assert [rows(d) for d in out] == [[(*FAR, 0.7, 0)], [(*FAR, 0.3, 0)]]  # b: the pass did not confirm it
    # stream a replayed from its start: its memory is gone, so it is asked again
    out = zoom.infer_streams([frame(1)], [("a", 0.0)])
    assert zoom.zoomed_frames == 3 and rows(out[0]) == [(*FAR, 0.3, 0)]
    # a sure box only: no pass, nothing remembered changes it
    inner.script[2] = [(100, 300, 500, 700, 0.8, 1)]
    zoom.infer_streams([frame(2)], [("c", 0.0)])
    assert zoom.zoomed_frames == 3


def test_a_batch_gets_at_most_per_batch_zoomed_passes_longest_waiting_streams_first() -> None:
    """Five streams started together, each with an unsure far car that moves: PER_BATCH passes a batch,
    the streams never asked (then the longest waiting) first, so the passes spread over the batches."""
    assert PER_BATCH == 2
    inner = TimedBackend(640, {n: [far_car(n, 8)] for n in range(10)})
    big = TimedBackend(960, {n: [far_car(n, 8, 0.7)] for n in range(10)})
    zoom = ZoomBackend(inner, big, every_s=10.0)
    zoom.class_groups = ((0, 1),)
    streams = ["s0", "s1", "s2", "s3", "s4"]
    asked = []
    for n in range(4):  # one frame of each stream per batch, every 2 s
        before = len(big.seen)
        zoom.infer_streams([frame(n)] * 5, [(s, 2.0 * n) for s in streams])
        asked.append(len(big.seen) - before)
    assert asked == [2, 2, 1, 0]  # 5 streams in 3 batches; none again before 10 s
    # which ones: the first two of the batch, then the next two never asked, then the last
    inner = TimedBackend(640, {k: [far_car(0)] for k in range(5)})  # frame k: stream k's view
    big = TimedBackend(960, {})
    zoom = ZoomBackend(inner, big, every_s=10.0)
    zoom.class_groups = ((0, 1),)
    which = []
    for ts in (0.0, 2.0, 4.0):
        before = len(big.seen)
        zoom.infer_streams([frame(k) for k in range(5)], [(s, ts) for s in streams])
        which.append(big.seen[before:])
    assert which == [[0, 1], [2, 3], [4]]


def test_live_the_zoomed_pass_runs_in_the_background_and_later_frames_get_its_score() -> None:
    """``wait=False`` (the live service): the asking frame keeps its native score, the pass runs beside
    the next batches (one job at a time), and the stream's later frames are confirmed from memory."""
    inner = TimedBackend(640, {n: [far_car(0)] for n in range(4)})
    big = TimedBackend(960, {0: [far_car(0, score=0.7)]})
    big.gate = threading.Event()  # hold the pass

    real_infer = big.infer

    def held(images: Sequence[Image]) -> list[Detections]:
        assert big.gate.wait(10)
        return real_infer(images)

    big.infer = held  # type: ignore[method-assign]
    zoom = ZoomBackend(inner, big, every_s=0.0)
    zoom.class_groups = ((0, 1),)
    first = zoom.infer_streams([frame(0)], [("cam", 0.0)], wait=False)
    assert rows(first[0]) == [(*FAR, 0.3, 0)]  # not waited for
    # while the job runs, no other frame is asked about, and nothing is confirmed yet
    second = zoom.infer_streams([frame(1)], [("cam-2", 0.0)], wait=False)
    assert zoom.zoomed_frames == 1 and rows(second[0]) == [(*FAR, 0.3, 0)]
    big.gate.set()
    zoom.settle()
    assert big.seen == [0]
    third = zoom.infer_streams([frame(2), frame(3)], [("cam", 2.0), ("cam-2", 2.0)], wait=False)
    assert rows(third[0]) == [(*FAR, 0.7, 0)]  # confirmed from memory, no new pass for it
    assert rows(third[1]) == [(*FAR, 0.3, 0)] and zoom.zoomed_frames == 2  # cam-2's turn now
    zoom.settle()
    zoom.close()


def test_live_a_failing_zoomed_pass_leaves_the_native_scores() -> None:
    inner = TimedBackend(640, {0: [far_car(0)], 1: [far_car(0)]})
    big = TimedBackend(960, {})

    def broken(images: Sequence[Image]) -> list[Detections]:
        raise RuntimeError("the runtime fell over")

    big.infer = broken  # type: ignore[method-assign]
    zoom = ZoomBackend(inner, big, every_s=0.0)
    zoom.infer_streams([frame(0)], [("cam", 0.0)], wait=False)
    zoom.settle()  # logged, not raised
    out = zoom.infer_streams([frame(1)], [("cam", 2.0)], wait=False)
    assert rows(out[0]) == [(*FAR, 0.3, 0)]
    zoom.settle()
    zoom.close()


def test_the_zoomed_pass_loads_with_its_own_thread_count() -> None:
    """The zoomed pass runs beside the main pass in the live service: it gets ZOOM_THREADS runtime threads
    (1), not the detector's, so it leaves a core to decoding and the main pass."""
    from detector.inference.model import ZOOM_THREADS, with_passes

    asked: list[dict[str, object]] = []

    def load_at(**kwargs: object) -> ScriptedBackend:
        asked.append(kwargs)
        return ScriptedBackend(int(kwargs["imgsz"]), [])  # type: ignore[call-overload]

    out = with_passes(ScriptedBackend(640, []), ModelConfig(zoom_imgsz=960), load_at, threads=2)
    assert isinstance(out, ZoomBackend) and out.zoomed.imgsz == 960
    assert ZOOM_THREADS == 1 and asked == [{"imgsz": 960, "threads": 1}]
