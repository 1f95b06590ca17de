"""The running detector's Prometheus metrics and readiness, read from its own counters at scrape time.

Nothing in the hot path counts for Prometheus: the stream workers, the inference service, the
pipelines, the publisher and the outbox keep the figures they always kept, and :func:`figures_of`
copies them into one :class:`Figures` when ``/metrics`` or ``/readyz`` is asked
(``detector.commands.metrics_server`` serves both). :class:`DetectorCollector` turns a
:class:`Figures` into metric families; :func:`not_ready` into the reasons ``/readyz`` answers 503 with.

Metrics (``stream``, ``model`` and ``state`` are labels):

- ``citywatch_stream_samples_total``: samples read from the stream;
- ``citywatch_stream_dropped_samples_total``: samples dropped because inference fell behind;
- ``citywatch_stream_reconnects_total``: reconnections of the source;
- ``citywatch_stream_events_total``: violation events the stream's rules sent;
- ``citywatch_stream_lag_seconds``: the last sample's lag (its timestamp to its detections handled);
- ``citywatch_stream_decode_seconds`` (summary): per decoded frame, the seconds in the decoder
  (and the colour conversion of the samples);
- ``citywatch_stream_inference_seconds`` (summary): per sample, the model seconds its batches spent on it;
- ``citywatch_stream_state``: 1 for the stream's state (connecting, live, stalled, failed, finished,
  stopped), 0 for the others;
- ``citywatch_model_batches_total``, ``citywatch_model_errors_total``, ``citywatch_model_batch_size``
  (summary: frames per batch), ``citywatch_model_batch_seconds`` (summary: seconds per batch);
- ``citywatch_outbox_depth``, ``citywatch_outbox_oldest_age_seconds`` (0 when empty),
  ``citywatch_outbox_max_events``;
- ``citywatch_events_published_total`` (stored in the outbox), ``citywatch_events_acked_total`` (the
  broker's PUBACK), ``citywatch_events_retried_total``;
- ``citywatch_mqtt_connected``, ``citywatch_models_loaded``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, get_args

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector

from detector.commands.metrics_server import MetricsServer, MetricsServerError
from detector.sources.worker import StateName

if TYPE_CHECKING:
    from detector.commands.run import Detector

log = logging.getLogger(__name__)

STATES: tuple[str, ...] = get_args(StateName)


@dataclass(frozen=True)
class StreamFigures:
    stream: str
    state: str
    reason: str | None = None  # the last failure's reason (unauthorized, not_found, lost, ...)
    samples: int = 0
    dropped: int = 0
    reconnects: int = 0
    events: int = 0
    lag_s: float | None = None
    decoded: int = 0
    decode_s: float = 0.0
    inferred: int = 0
    infer_s: float = 0.0


@dataclass(frozen=True)
class ModelFigures:
    model: str
    batches: int = 0
    frames: int = 0
    busy_s: float = 0.0
    errors: int = 0


@dataclass(frozen=True)
class Figures:
    """Everything ``/metrics`` and ``/readyz`` say, taken at one scrape."""

    streams: tuple[StreamFigures, ...] = ()
    models: tuple[ModelFigures, ...] = ()
    models_loaded: bool = False
    inference_running: bool = False
    broker_connected: bool = False
    outbox_depth: int = 0
    outbox_oldest_age_s: float | None = None
    outbox_max_events: int = 0
    published: int = 0
    acked: int = 0
    retried: int = 0


def figures_of(det: Detector, clock: Callable[[], float] = time.time) -> Figures:
    """The detector's figures now; parts not started yet (or stopped) count as zero / absent."""
    service, publisher, outbox, comm = det.service, det.publisher, det.outbox, det.comm
    streams, models = ({}, {}) if service is None else service.counters_now()
    pipelines = dict(det.pipelines)
    rows = []
    for w in list(det.workers):
        sid, st = w.stream.id, w.state
        c, pipe = streams.get(sid), pipelines.get(sid)
        rows.append(
            StreamFigures(
                stream=sid,
                state=st.state,
                reason=st.reason,
                samples=st.samples,
                dropped=c.dropped if c else 0,
                reconnects=st.reconnects,
                events=pipe.events_sent if pipe else 0,
                lag_s=c.last_lag_s if c else None,
                decoded=st.decoded,
                decode_s=st.decode_s,
                inferred=c.done if c else 0,
                infer_s=c.infer_s if c else 0.0,
            )
        )
    depth, oldest = outbox.depth() if outbox is not None else (0, None)
    return Figures(
        streams=tuple(rows),
        models=tuple(ModelFigures(m, c.batches, c.frames, c.busy_s, c.errors) for m, c in models.items()),
        models_loaded=det.models is not None and bool(det.models.models),
        inference_running=service is not None and service.is_alive(),
        broker_connected=comm is not None and comm.is_connected(),
        outbox_depth=depth,
        outbox_oldest_age_s=None if oldest is None else max(0.0, clock() - oldest),
        outbox_max_events=outbox.max_events if outbox is not None else 0,
        published=publisher.published if publisher is not None else 0,
        acked=publisher.acked if publisher is not None else 0,
        retried=publisher.retried if publisher is not None else 0,
    )


def start_metrics(det: Detector) -> MetricsServer | None:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` where the config's ``metrics:`` says. None when
    ``port`` is 0, or when the server cannot listen: logged as an error, and the detector runs on without
    them (its work is detection; a monitoring port taken by another process must not stop it)."""
    m = det.cfg.metrics
    if not m.port:
        return None
    try:
        server = MetricsServer(m.host, m.port)
    except MetricsServerError as err:
        log.error("metrics and health checks are off: %s", err)
        return None
    return server.serve(DetectorCollector(lambda: figures_of(det)), lambda: not_ready(figures_of(det)))


def not_ready(fig: Figures) -> list[str]:
    """Why the detector is not ready (empty: ready): ``/readyz`` answers 503 with these."""
    reasons = []
    if not fig.broker_connected:
        reasons.append("the MQTT broker is not connected (events wait in the outbox)")
    if not fig.models_loaded:
        reasons.append("no model is loaded")
    elif not fig.inference_running:
        reasons.append("the inference service is not running")
    if not fig.streams:
        reasons.append("no stream runs")
    elif all(s.state == "failed" for s in fig.streams):
        failed = ", ".join(f"{s.stream} ({s.reason or 'failed'})" for s in fig.streams)
        reasons.append(f"every stream failed: {failed}")
    return reasons


class DetectorCollector(Collector):
    """Metric families from ``figures()``, called once per scrape."""

    def __init__(self, figures: Callable[[], Figures]) -> None:
        self.figures = figures

    def describe(self) -> Iterator[Metric]:
        return iter(())  # the families depend on the streams and models running: nothing to check ahead

    def collect(self) -> Iterator[Metric]:
        fig = self.figures()
        yield from _stream_families(fig.streams)
        yield from _model_families(fig.models)
        yield from _delivery_families(fig)


def _counter(name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
    return CounterMetricFamily(f"citywatch_{name}", doc, labels=labels)


def _stream_families(streams: tuple[StreamFigures, ...]) -> Iterator[Metric]:
    samples = _counter("stream_samples", "Samples read from the stream.", ["stream"])
    dropped = _counter("stream_dropped_samples", "Samples dropped: inference fell behind.", ["stream"])
    reconnects = _counter("stream_reconnects", "Reconnections of the stream's source.", ["stream"])
    events = _counter("stream_events", "Violation events the stream's rules sent.", ["stream"])
    lag = GaugeMetricFamily(
        "citywatch_stream_lag_seconds",
        "The last sample's lag: timestamp to detections handled.",
        labels=["stream"],
    )
    decode = SummaryMetricFamily(
        "citywatch_stream_decode_seconds", "Seconds decoding, per decoded frame.", labels=["stream"]
    )
    infer = SummaryMetricFamily(
        "citywatch_stream_inference_seconds",
        "Model seconds per sample (its share of each batch).",
        labels=["stream"],
    )
    state = GaugeMetricFamily(
        "citywatch_stream_state",
        "1 for the stream's current state, 0 for the others.",
        labels=["stream", "state"],
    )
    for s in streams:
        sid = [s.stream]
        samples.add_metric(sid, s.samples)
        dropped.add_metric(sid, s.dropped)
        reconnects.add_metric(sid, s.reconnects)
        events.add_metric(sid, s.events)
        if s.lag_s is not None:
            lag.add_metric(sid, s.lag_s)
        decode.add_metric(sid, s.decoded, s.decode_s)
        infer.add_metric(sid, s.inferred, s.infer_s)
        for name in STATES:
            state.add_metric([s.stream, name], 1.0 if s.state == name else 0.0)
    yield from (samples, dropped, reconnects, events, lag, decode, infer, state)


def _model_families(models: tuple[ModelFigures, ...]) -> Iterator[Metric]:
    batches = _counter("model_batches", "Batches the model inferred.", ["model"])
    errors = _counter("model_errors", "Batches the model failed on (their frames are lost).", ["model"])
    size = SummaryMetricFamily("citywatch_model_batch_size", "Frames per batch.", labels=["model"])
    latency = SummaryMetricFamily("citywatch_model_batch_seconds", "Seconds per batch.", labels=["model"])
    for m in models:
        batches.add_metric([m.model], m.batches)
        errors.add_metric([m.model], m.errors)
        size.add_metric([m.model], m.batches, m.frames)
        latency.add_metric([m.model], m.batches, m.busy_s)
    yield from (batches, errors, size, latency)


def _delivery_families(fig: Figures) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "citywatch_outbox_depth", "Events waiting for the broker's PUBACK.", fig.outbox_depth
    )
    yield GaugeMetricFamily(
        "citywatch_outbox_oldest_age_seconds",
        "Age of the oldest event in the outbox (0: empty).",
        fig.outbox_oldest_age_s or 0.0,
    )
    yield GaugeMetricFamily("citywatch_outbox_max_events", "The outbox's capacity.", fig.outbox_max_events)
    yield CounterMetricFamily("citywatch_events_published", "Events stored in the outbox.", fig.published)
    yield CounterMetricFamily("citywatch_events_acked", "Events the broker acknowledged.", fig.acked)
    yield CounterMetricFamily(
        "citywatch_events_retried", "Events sent again (refused, no PUBACK).", fig.retried
    )
    yield GaugeMetricFamily(
        "citywatch_mqtt_connected", "1 while the MQTT broker is connected.", float(fig.broker_connected)
    )
    yield GaugeMetricFamily(
        "citywatch_models_loaded", "Models loaded.", len(fig.models) if fig.models_loaded else 0
    )
