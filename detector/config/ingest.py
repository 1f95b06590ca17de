"""The ``ingest`` section of a stream: how its source is opened, watched and reconnected.

Kept apart from ``detector.config.schema`` (which embeds it in ``StreamConfig``) so the schema file stays
small. Defaults suit cameras on a LAN: a stall is declared after 10 s without a usable frame, a stream
that worked is retried at most every 4 s (it is live again within seconds of the camera's return), and
one that fails in a way that needs a person (wrong password, unknown path, not a video) at most every 60 s.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from detector.config.errors import ConfigProblem


class IngestConfig(BaseModel):
    """Opening, watching and reconnecting one stream's source."""

    model_config = ConfigDict(extra="forbid")

    transport: Literal["tcp", "udp"] = Field(
        default="tcp",
        description="RTSP transport: tcp (interleaved, no loss) or udp (lower latency, may lose packets).",
    )
    open_timeout_s: float = Field(
        default=10.0, gt=0.0, le=300.0, description="Give up opening the source after this many seconds."
    )
    stall_timeout_s: float = Field(
        default=10.0,
        gt=0.0,
        le=3600.0,
        description="No usable frame (or no data at all) for this long: the stream is stalled and reopened.",
    )
    reconnect_min_s: float = Field(
        default=0.5, gt=0.0, le=600.0, description="First wait before reopening a stream that broke."
    )
    reconnect_max_s: float = Field(
        default=4.0,
        gt=0.0,
        le=3600.0,
        description="Longest wait between reopening attempts after a stall, a refusal or a timeout.",
    )
    failed_retry_s: float = Field(
        default=60.0,
        gt=0.0,
        le=86400.0,
        description="Longest wait between attempts when the source fails in a way a person must fix "
        "(wrong password, not found, not a video); cameras lock accounts that retry too often.",
    )
    decode_threads: int = Field(
        default=1,
        ge=0,
        le=64,
        description="Decoder threads per stream (0 = FFmpeg's choice). One suits many streams per process.",
    )
    evidence_timeout_s: float = Field(
        default=8.0,
        gt=0.0,
        le=120.0,
        description="With detect_url: longest wait for a main-stream frame for evidence; after it the "
        "detection frame is the evidence.",
    )

    @model_validator(mode="after")
    def _check_backoff(self) -> IngestConfig:
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ConfigProblem.at(
                ("reconnect_min_s",),
                f"reconnect_min_s {self.reconnect_min_s:g} is longer than reconnect_max_s "
                f"{self.reconnect_max_s:g}",
                "make reconnect_min_s at most reconnect_max_s",
            )
        return self
