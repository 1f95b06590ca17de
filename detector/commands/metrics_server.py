"""The detector's metrics and health server (``metrics:`` in streams.yaml): one HTTP server, three paths.

- ``GET /metrics``: the Prometheus text format (``prometheus_client``'s WSGI app over the detector's own
  registry: :class:`~detector.commands.metrics.DetectorCollector`, nothing of the process-global one);
- ``GET /healthz``: 200 ``{"status": "alive"}`` while the process answers;
- ``GET /readyz``: 200 ``{"ready": true, "reasons": []}``, or 503 with the reasons it is not ready
  (``detector.commands.metrics.not_ready``: broker, models, streams);
- anything else: 404.

Making a :class:`MetricsServer` takes the port (:class:`MetricsServerError` when it cannot),
:meth:`MetricsServer.serve` starts answering, :meth:`MetricsServer.stop` closes it. It runs on
``prometheus_client``'s threading WSGI server, one daemon thread per request.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from detector.contracts.errors import DetectorError

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
Ready = Callable[[], list[str]]  # the reasons the detector is not ready; empty: ready


class MetricsServerError(DetectorError, OSError):
    """The metrics server cannot listen where the config says."""


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """A scrape every 15 s is not news: no access log."""


def _server_class(host: str, port: int) -> type[ThreadingWSGIServer]:
    """The threading WSGI server for ``host``'s address family (IPv6 hosts work too)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    except socket.gaierror as exc:
        raise MetricsServerError(f"metrics.host {host!r} does not resolve: {exc}") from exc

    class Server(ThreadingWSGIServer):
        address_family = family

    return Server


def _json(start_response: StartResponse, status: str, body: dict[str, Any]) -> Iterable[bytes]:
    data = json.dumps(body, ensure_ascii=False).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


class MetricsServer:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.registry = CollectorRegistry(auto_describe=False)
        self._ready: Ready = lambda: ["the detector is starting"]
        self._metrics = make_wsgi_app(self.registry)
        self._thread: threading.Thread | None = None
        try:
            self._httpd = make_server(
                host, port, self._app, server_class=_server_class(host, port), handler_class=_QuietHandler
            )
        except OSError as exc:
            if isinstance(exc, MetricsServerError):
                raise
            raise MetricsServerError(
                f"cannot serve metrics on {host}:{port}: {exc}; set metrics.port in streams.yaml to a free "
                "port (0 turns the metrics server off)"
            ) from exc
        self.port = int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def serve(self, collector: Collector, ready: Ready) -> MetricsServer:
        self.registry.register(collector)
        self._ready = ready
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="metrics", daemon=True)
        self._thread.start()
        log.info("metrics on %s/metrics, health on /healthz and /readyz", self.url)
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
        self._httpd.server_close()

    def _app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return _json(start_response, "405 Method Not Allowed", {"detail": "only GET"})
        if path == "/metrics":
            body: Iterable[bytes] = self._metrics(environ, start_response)
            return body
        if path == "/healthz":
            return _json(start_response, "200 OK", {"status": "alive"})
        if path == "/readyz":
            try:
                reasons = self._ready()
            except Exception as exc:  # a broken check is a reason, not a crashed server thread
                log.exception("readiness check failed")
                reasons = [f"the readiness check failed: {type(exc).__name__}: {exc}"]
            status = "503 Service Unavailable" if reasons else "200 OK"
            return _json(start_response, status, {"ready": not reasons, "reasons": reasons})
        return _json(start_response, "404 Not Found", {"detail": "try /metrics, /healthz or /readyz"})
