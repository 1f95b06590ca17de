"""The API's Prometheus metrics (``GET /metrics``, api/routes/metrics.py): one registry per app.

- ``citywatch_api_request_seconds`` (histogram; ``method``, ``route``, ``status``): seconds until a
  response's headers go out (a ``/live`` stream's hours are not latency), labelled by the route's template
  (``/cases/{case_id}``), never the raw path; a path no route takes is ``unmatched``. Requests the
  ingress guard refuses (401, 413, 429...) count under the route they were for.

Read at scrape time from what the app already keeps (:class:`ApiCollector`):

- ``citywatch_api_ingest_events_total`` (``outcome``: created, updated, stale, duplicate),
  ``citywatch_api_ingest_dead_letters_total``, ``citywatch_api_ingest_received_total``,
  ``citywatch_api_ingest_queued``: the MQTT ingest's counters (``MqttIngest.stats``), with ingest on;
- ``citywatch_api_mqtt_connected`` (``client``: ingest, recheck): 1 while that MQTT client is connected,
  for the clients that run;
- ``citywatch_api_cases`` (``status``, ``rule``): cases now, from one ``GROUP BY`` query per scrape
  (every status of each rule present, 0 included, so a series drops to 0 rather than vanishing);
- ``citywatch_api_database_up``: 1 when that query worked.

The counters are the process's own: with several API workers, each answers for itself (the cases gauge
is the database's, the same from any worker).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.models import Case, CaseStatus

log = logging.getLogger(__name__)

UNMATCHED = "unmatched"
INGESTED = ("created", "updated", "stale", "duplicate")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def flat_routes(routes: Iterable[Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(prefix, route) of every route an app serves. FastAPI keeps an included router whole (its routes
    under ``original_router``, its prefix in ``include_context``); older releases copied them over."""
    for route in routes:
        sub = getattr(route, "original_router", None)
        if sub is not None:
            extra = getattr(getattr(route, "include_context", None), "prefix", "") or ""
            yield from flat_routes(sub.routes, prefix + extra)
        else:
            yield prefix, route


def find_template(routes: Iterable[tuple[str, Any]], scope: Scope) -> str:
    """The template of the route that would take the request (a method it does not take: still that
    route, as the 405 says); ``unmatched`` when none."""
    partial = None
    path: str = scope.get("path", "")
    for prefix, route in routes:
        if not path.startswith(prefix):
            continue
        match, _ = route.matches({**scope, "path": path[len(prefix) :]} if prefix else scope)
        if match is Match.FULL:
            return prefix + str(route.path)
        if match is Match.PARTIAL and partial is None:
            partial = prefix + str(route.path)
    return partial or UNMATCHED


def route_template(scope: Scope, routes: Iterable[tuple[str, Any]] = ()) -> str:
    """The template of the route that took the request (``scope["route"]``, set by the router) or,
    for a request answered before routing (the ingress guard's refusals), of the one that would have."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str) and path:
        return path
    return find_template(routes, scope)


class ApiCollector(Collector):
    """The ingest counters, the MQTT clients and the cases, read from the app's state at each scrape."""

    def __init__(self, state: Any) -> None:
        self.state = state  # the app's ``state``: its parts appear when the lifespan has started them

    def describe(self) -> Iterator[Metric]:
        return iter(())  # which families come depends on what runs (ingest on or off)

    def collect(self) -> Iterator[Metric]:
        ingest = getattr(self.state, "ingest", None)
        recheck = getattr(self.state, "recheck_mqtt", None)
        if ingest is not None:
            yield from ingest_families(ingest.stats())
        connected = GaugeMetricFamily(
            "citywatch_api_mqtt_connected", "1 while the MQTT client is connected.", labels=["client"]
        )
        for name, client in (("ingest", ingest), ("recheck", recheck)):
            if client is not None:
                connected.add_metric([name], 1.0 if client.connected else 0.0)
        yield connected
        factory = getattr(self.state, "session_factory", None)
        if factory is not None:
            yield from case_families(factory)


def ingest_families(stats: dict[str, Any]) -> Iterator[Metric]:
    counts: dict[str, int] = stats.get("counts", {})
    events = CounterMetricFamily(
        "citywatch_api_ingest_events", "Violation events ingested, by outcome.", labels=["outcome"]
    )
    for outcome in INGESTED:
        events.add_metric([outcome], counts.get(outcome, 0))
    yield events
    yield CounterMetricFamily(
        "citywatch_api_ingest_dead_letters",
        "Messages refused into dead letters.",
        stats.get("dead_letters", 0),
    )
    yield CounterMetricFamily(
        "citywatch_api_ingest_received", "MQTT messages received.", counts.get("received", 0)
    )
    yield GaugeMetricFamily(
        "citywatch_api_ingest_queued", "Messages received and not yet committed.", stats.get("queued", 0)
    )


def case_families(session_factory: Any) -> Iterator[Metric]:
    """``citywatch_api_cases`` from one GROUP BY, and whether the database answered it."""
    try:
        with session_factory() as session:
            rows = session.execute(
                select(Case.status, Case.rule, func.count()).group_by(Case.status, Case.rule)
            ).all()
        up = 1.0
    except SQLAlchemyError as exc:
        log.warning("metrics: counting the cases failed: %s", " ".join(str(exc).split())[:300])
        rows, up = [], 0.0
    yield GaugeMetricFamily("citywatch_api_database_up", "1 when the database answered.", up)
    cases = GaugeMetricFamily(
        "citywatch_api_cases", "Cases now, by status and rule.", labels=["status", "rule"]
    )
    counts = {(str(status), str(rule)): int(n) for status, rule, n in rows}
    for rule in sorted({rule for _, rule in counts}):
        for status in CaseStatus:
            cases.add_metric([status.value, rule], counts.get((status.value, rule), 0))
    yield cases


class ApiMetrics:
    """The app's registry: the request histogram and the collector."""

    def __init__(self, state: Any) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Histogram(
            "citywatch_api_request_seconds",
            "Seconds until the response's headers go out, by route template.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(ApiCollector(state))


class RequestMetrics:
    """Pure ASGI middleware: observes each HTTP request in ``metrics.requests``."""

    def __init__(self, app: ASGIApp, *, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self._routes: list[tuple[str, Any]] | None = None  # the app's routes, listed at the first refusal

    def _template(self, scope: Scope) -> str:
        if "route" not in scope and self._routes is None:
            self._routes = list(flat_routes(getattr(getattr(scope.get("app"), "router", None), "routes", ())))
        return route_template(scope, self._routes or ())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        seen = False

        def observe(status: int) -> None:
            nonlocal seen
            if not seen:
                seen = True
                elapsed = time.perf_counter() - started
                self.metrics.requests.labels(scope["method"], self._template(scope), str(status)).observe(
                    elapsed
                )

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                observe(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        except Exception:
            observe(500)  # the server answers 500 for it
            raise
