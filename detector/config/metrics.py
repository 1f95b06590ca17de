"""The ``metrics`` section: where ``citywatch run`` serves its Prometheus metrics and health checks.

Kept apart from ``detector.config.schema`` (which embeds it in ``CitywatchConfig``) so the schema file
stays small. One HTTP server answers ``/metrics`` (Prometheus text format), ``/healthz`` (alive) and
``/readyz`` (broker connected, models loaded, a stream not failed); ``port: 0`` turns it off.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class MetricsConfig(BaseModel):
    """The detector's metrics and health server."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(
        default="127.0.0.1",
        min_length=1,
        description="Address the server listens on (127.0.0.1: this machine only; 0.0.0.0: every "
        "interface, for a Prometheus elsewhere; the answers carry no secret but the stream ids).",
    )
    port: int = Field(
        default=9464,
        ge=0,
        le=65535,
        description="TCP port of /metrics, /healthz and /readyz; 0 turns it off.",
    )
