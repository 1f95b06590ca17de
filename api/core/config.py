"""Settings of the case API, read from ``CITYWATCH_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from api.core.ratelimit import Quota, parse_quota
from detector.contracts.recheck import command_topic

_TOPIC_SEGMENT_FORBIDDEN = ("+", "#")


def describe(exc: ValidationError) -> str:
    """The problems of a settings or key validation, without the values (they may be secrets)."""
    return "; ".join(
        f"{'.'.join(str(part) for part in e['loc']) or 'value'}: {e['msg']}"
        for e in exc.errors(include_input=False, include_url=False)
    )


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
    mqtt_protocol: Literal["auto", "5", "3.1.1"] = Field(
        default="auto", description="auto: MQTT 5, falling back to 3.1.1 when the broker refuses 5"
    )
    mqtt_session_expiry_s: int = Field(
        default=7 * 24 * 3600,
        ge=60,
        description="MQTT 5: how long the broker keeps this worker's session and queued events "
        "while it is away",
    )
    mqtt_receive_maximum: int = Field(
        default=1000,
        ge=1,
        le=65535,
        description="MQTT 5: unacknowledged events the broker may send at once (the most one batch holds)",
    )
    mqtt_tls: bool = Field(default=False, description="connect with TLS (usually port 8883)")
    mqtt_ca_file: Path | None = Field(default=None, description="CA bundle of the broker; None: the system's")
    mqtt_cert_file: Path | None = Field(default=None, description="client certificate (mutual TLS)")
    mqtt_key_file: Path | None = Field(default=None, description="private key of mqtt_cert_file")
    mqtt_tls_insecure: bool = Field(default=False, description="skip the host name check: test brokers only")
    ingest_batch_max: int = Field(
        default=500, ge=1, le=65535, description="most events committed in one transaction (then acked)"
    )
    ingest_enabled: bool = Field(default=True, description="run the MQTT consumer inside the API process")
    ingest_max_payload_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1024, description="larger messages are dead-lettered without being parsed"
    )
    mqtt_max_packet_bytes: int | None = Field(
        default=None,
        ge=2048,
        le=268_435_455,
        description="MQTT 5 Maximum Packet Size (sent in CONNECT): the broker never sends this client a "
        "larger message. None: twice ingest_max_payload_bytes, so a message somewhat over the payload "
        "limit still arrives and is dead-lettered with the reason; must exceed ingest_max_payload_bytes",
    )
    ingest_queue_max: int = Field(
        default=1000,
        ge=1,
        le=1_000_000,
        description="most MQTT messages the ingest holds in memory (queued or in hand, until acked); when "
        "full, the network thread waits and the rest stays with the broker, unacked",
    )
    ingest_queue_max_bytes: int = Field(
        default=128 * 1024 * 1024,
        ge=1024 * 1024,
        description="most payload bytes the ingest holds in memory (one larger message passes alone)",
    )
    # -- auth (api/AUTH.md) ------------------------------------------------------------------
    api_keys: list[dict[str, Any]] | None = Field(
        default=None,
        description='JSON list of {"key" or "key_sha256", "name", "role", "unit"}; with api_keys_file unset '
        "too the API does not start, unless dev_mode asks for the documented dev keys",
    )
    api_keys_file: Path | None = Field(default=None, description="YAML file with an `api_keys:` list")
    anonymous_read: bool = Field(
        default=False,
        description="let requests without a credential read /cases (dev mode included: off unless set)",
    )
    dev_mode: bool = Field(
        default=False,
        description="with no key configured, accept the documented dev keys (api/AUTH.md); the API then "
        "binds and answers loopback only. Without keys and without dev mode the API does not start",
    )
    token_secret: SecretStr | None = Field(
        default=None,
        description="HMAC key of the OAuth2 bearer tokens; a random one per process when unset "
        "(set it when several API workers run)",
    )
    token_ttl_s: int = Field(default=3600, ge=60, le=7 * 24 * 3600)
    # -- case desk ---------------------------------------------------------------------------
    routing_file: Path | None = Field(
        default=None,
        description="职责清单 YAML (units, routes, calendar, dedup); default api/config/routing.yaml",
    )
    report_max_photo_bytes: int = Field(default=5 * 1024 * 1024, ge=1024, le=50 * 1024 * 1024)
    recheck_enabled: bool = Field(default=True, description="ask the detector to re-check disposed cases")
    recheck_retry_s: float = Field(default=60.0, gt=0, description="re-publish an unanswered re-check after")
    recheck_timeout_s: float = Field(
        default=900.0, gt=0, description="after this the re-check expires and a person verifies"
    )
    recheck_poll_s: float = Field(default=1.0, gt=0, le=60)
    cases_count_limit: int = Field(
        default=10_000,
        ge=0,
        description="GET /cases counts exactly up to this many matches, then says count_exact=false "
        "(counting 10^6 rows costs ~100 ms); 0 = always exact",
    )
    public_base_url: str | None = Field(
        default=None, description="absolute base for media_url in Open311 answers, e.g. https://cases.example"
    )
    # -- web console (/console), live events (/live), the data team's view (/models) ----------
    streams_file: Path | None = Field(
        default=None,
        description="the detector's streams.yaml: its streams, zones and which model serves which rule "
        "(unset: the console's stream pages are read-only and /models shows no rule map)",
    )
    collect_dir: Path | None = Field(
        default=None, description="the detector's collection of frames (collect.dir): /models counts it"
    )
    live_poll_s: float = Field(
        default=1.0, gt=0, le=60, description="GET /live looks for changed cases this often"
    )
    live_heartbeat_s: float = Field(default=15.0, gt=0, le=300, description="GET /live's heartbeat comment")
    # -- ingress limits, quotas, disk floors, retention (SECURITY.md) ------------------------
    form_overhead_bytes: int = Field(
        default=64 * 1024,
        ge=4096,
        le=1024 * 1024,
        description="bytes a form route takes on top of its photo (text fields, multipart framing)",
    )
    json_max_bytes: int = Field(
        default=64 * 1024, ge=1024, le=8 * 1024 * 1024, description="largest body of every other route"
    )
    rate_reports_per_key: str = Field(
        default="600/h",
        description="reports and Open311 requests one credential may file (AMOUNT/PERIOD, 0 = no limit); "
        "the citizen app's public key is shared by all its users",
    )
    rate_reports_per_address: str = Field(
        default="20/h", description="reports and Open311 requests one client address (IPv6: /64) may file"
    )
    rate_report_bytes_per_key: str = Field(default="2GiB/h", description="upload bytes per credential")
    rate_report_bytes_per_address: str = Field(default="50MiB/h", description="upload bytes per address")
    rate_token_per_address: str = Field(default="120/h", description="POST /auth/token calls per address")
    rate_max_tracked: int = Field(
        default=100_000, ge=100, description="most quota buckets kept in memory (least recently used go)"
    )
    evidence_upload_floor_bytes: int = Field(
        default=1024**3,
        ge=0,
        description="HTTP uploads get 507 when they would leave less free space in evidence_dir (0: off)",
    )
    evidence_ingest_floor_bytes: int = Field(
        default=128 * 1024**2,
        ge=0,
        description="camera evidence (MQTT, re-check answers) waits (is retried) below this free space; "
        "at most the upload floor",
    )
    retention_photo_days: int = Field(
        default=365,
        ge=0,
        description="photos of ended cases (closed, rejected, merged) untouched this long are deleted "
        "unless a live case still uses them (0: keep forever)",
    )
    retention_dead_letter_days: int = Field(
        default=30, ge=0, description="dead letters older than this are deleted (0: keep forever)"
    )
    evidence_budget_mb: int = Field(
        default=0,
        ge=0,
        description="most MB the evidence store may hold (0: no budget); the retention task deletes "
        "images of ended cases over it (after-images and history images first, then the main evidence, "
        "oldest first) and never an image an open case uses; a pruned image answers 410 Gone",
    )
    retention_interval_s: float = Field(
        default=6 * 3600.0,
        ge=0,
        description="how often the API runs the retention task (0: never; `python -m api retention` then)",
    )

    @field_validator(
        "rate_reports_per_key",
        "rate_reports_per_address",
        "rate_report_bytes_per_key",
        "rate_report_bytes_per_address",
        "rate_token_per_address",
    )
    @classmethod
    def _check_quota(cls, value: str) -> str:
        parse_quota(value)
        return value

    @model_validator(mode="after")
    def _check_limits(self) -> Settings:
        if self.evidence_ingest_floor_bytes > self.evidence_upload_floor_bytes > 0:
            raise ValueError(
                "evidence_ingest_floor_bytes must be at most evidence_upload_floor_bytes: "
                "camera evidence must still be stored when uploads are refused"
            )
        body = self.upload_max_bytes
        for name in ("rate_report_bytes_per_key", "rate_report_bytes_per_address"):
            quota = parse_quota(getattr(self, name))
            if quota is not None and quota.amount < body:
                raise ValueError(f"{name} must allow at least one upload ({body} bytes)")
        return self

    @property
    def upload_max_bytes(self) -> int:
        """The largest body of a form route with a photo: the photo limit plus the form overhead."""
        return self.report_max_photo_bytes + self.form_overhead_bytes

    def quota(self, name: str) -> Quota | None:
        """The parsed ``rate_*`` setting ``name`` (None: no limit)."""
        value: str = getattr(self, name)
        return parse_quota(value)

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

    def _shared(self, topic: str) -> str:
        if self.mqtt_shared_group:
            return f"$share/{self.mqtt_shared_group}/{topic}"
        return topic

    @property
    def violations_topic_filter(self) -> str:
        return self._shared(f"{self.mqtt_topic_prefix}/violations/+")

    @property
    def recheck_results_topic_filter(self) -> str:
        return self._shared(f"{self.mqtt_topic_prefix}/recheck-results/+")

    def recheck_command_topic(self, stream: str) -> str:
        return command_topic(self.mqtt_topic_prefix, stream)
