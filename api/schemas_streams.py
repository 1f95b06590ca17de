"""REST shapes of ``GET /streams`` and ``PUT /streams/{id}/zones`` (the console's stream pages)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class StreamStatePublic(BaseModel):
    """The detector's latest ``stream-state.v1`` of the stream, as the console shows it."""

    state: str | None = Field(
        description="connecting, live, stalled (reconnecting), failed (needs a person), finished, stopped"
    )
    reason: str | None = Field(default=None, description="a short class of last_error (e.g. unauthorized)")
    last_error: str | None = Field(default=None, description="why the source last failed (URL masked)")
    since: datetime | None = Field(default=None, description="when the stream entered this state")
    sample_fps: float | None = Field(default=None, description="sampled frames a second (last 30 s)")
    sample_interval_s: float | None = Field(default=None, description="configured seconds between samples")
    lag_s: float | None = Field(default=None, description="seconds from sampling to detection")
    last_seen: datetime | None = Field(default=None, description="when the last frame was sampled")
    width: int | None = None
    height: int | None = None
    updated_at: datetime = Field(description="when the API received this state")


class StreamPublic(BaseModel):
    id: str
    name: str | None = Field(default=None, description="from the streams file")
    in_file: bool = Field(description="the streams file (CITYWATCH_STREAMS_FILE) has this stream")
    enabled: bool | None = Field(default=None, description="from the streams file (None: not in it)")
    state: StreamStatePublic | None = Field(description="None: no state received from a detector yet")
    snapshot_at: datetime | None = Field(
        default=None, description="when the latest snapshot came (GET /streams/{id}/snapshot); None: none yet"
    )
    zones: list[dict[str, Any]] | None = Field(
        default=None, description="the stream's `zones:` as in streams.yaml (None: not in the streams file)"
    )


class StreamsPublic(BaseModel):
    data: list[StreamPublic]
    count: int
    zones_editable: bool = Field(description="PUT /streams/{id}/zones can save (an admin may)")
    zones_read_only_reason: str | None = Field(
        default=None, description="why the zones cannot be saved (the streams file is unset or not writable)"
    )
    file_error: str | None = Field(default=None, description="why the streams file could not be read")


class ZoneProblemPublic(BaseModel):
    loc: list[str | int] = Field(description='["body", zone index, key...] in the zones sent')
    msg: str
    type: str
    hint: str = Field(default="", description="how to fix it, as `citywatch config check` says")
    path: str = Field(
        default="", description="the key path in streams.yaml, as `citywatch config check` prints it"
    )


class ZonesInvalidPublic(BaseModel):
    detail: list[ZoneProblemPublic]
