"""Settings of the case API, read from ``CITYWATCH_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_TOPIC_SEGMENT_FORBIDDEN = ("+", "#")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CITYWATCH_", extra="ignore")

    database_url: str = Field(
        default="sqlite:///var/citywatch.db",
        description="SQLAlchemy URL; sqlite:///relative/path is relative to the working directory, "
        "postgresql+psycopg://user@host/db for PostgreSQL",
    )
    evidence_dir: Path = Field(default=Path("var/evidence"), description="content-addressed JPEG store")
    mqtt_host: str = Field(default="127.0.0.1", min_length=1)
    mqtt_port: int = Field(default=1883, ge=1, le=65535)
    mqtt_username: str | None = None
    mqtt_password: SecretStr | None = None
    mqtt_topic_prefix: str = Field(default="citywatch/v1", min_length=1, max_length=200)
    mqtt_shared_group: str | None = Field(
        default=None,
        description="when set, subscribe as $share/<group>/... so several API workers split the load",
    )
    mqtt_client_id: str = Field(
        default="citywatch-api",
        min_length=1,
        max_length=128,
        description="stable client id: the broker keeps this session's QoS 1 messages while the API is down; "
        "give every API worker its own",
    )
    mqtt_keepalive_s: int = Field(default=30, ge=5, le=3600)
    mqtt_reconnect_max_delay_s: int = Field(default=30, ge=1, le=600)
    ingest_enabled: bool = Field(default=True, description="run the MQTT consumer inside the API process")
    ingest_max_payload_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1024, description="larger messages are dead-lettered without being parsed"
    )

    @field_validator("mqtt_topic_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        edge_slash = value.startswith("/") or value.endswith("/")
        if edge_slash or any(ch in value for ch in _TOPIC_SEGMENT_FORBIDDEN):
            raise ValueError("mqtt_topic_prefix must be a plain topic path without wildcards or edge slashes")
        return value

    @field_validator("mqtt_shared_group")
    @classmethod
    def _check_group(cls, value: str | None) -> str | None:
        if value is not None and (not value or any(ch in value for ch in ("/", "+", "#"))):
            raise ValueError("mqtt_shared_group must be a non-empty name without '/', '+' or '#'")
        return value

    @property
    def violations_topic_filter(self) -> str:
        topic = f"{self.mqtt_topic_prefix}/violations/+"
        if self.mqtt_shared_group:
            return f"$share/{self.mqtt_shared_group}/{topic}"
        return topic
