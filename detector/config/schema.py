"""The ``streams.yaml`` schema: one pydantic model per section.

``extra="forbid"`` everywhere, every field a ``Field`` with a description and bounds,
cross-field checks in ``model_validator``s. Validators raise ``ConfigProblem`` so that each
problem keeps its exact key path (see ``detector.config.errors``). Load files with
``detector.config.load_config``, which adds file positions and ``${VAR}`` expansion.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from detector.config.collect import CollectConfig
from detector.config.errors import ConfigProblem, Loc, Problem, problems_from_validation_error
from detector.config.ingest import IngestConfig
from detector.config.metrics import MetricsConfig
from detector.config.model import (
    RULE_MODELS_DESCRIPTION,
    ModelConfig,
    ModelsConfig,
    RuleModels,
    check_rule_models,
)
from detector.config.validators import (
    check_polygon,
    check_polygon_shape,
    check_rule_names,
    check_source_url,
    duplicate_stream_ids,
)
from detector.config.yamlparse import mask_url
from detector.contracts.zones import duplicate_zone_ids, stray_param_problems
from detector.rules.params import RULE_NAMES, RulesConfig

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
RuleOverrides = dict[str, dict[str, Any]]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MqttConfig(_Section):
    """Broker connection. ``citywatch run`` never starts a broker of its own (``citywatch demo``
    starts the embedded one on loopback for a try-out); see deploy/mosquitto/README.md."""

    host: str = Field(default="127.0.0.1", min_length=1, description="Broker host name or IP address.")
    port: int = Field(default=1883, ge=1, le=65535, description="Broker TCP port (1883 plain, 8883 TLS).")
    username: str | None = Field(
        default=None, min_length=1, description="User name; None connects anonymously."
    )
    password: SecretStr | None = Field(
        default=None, description="Password; write ${CITYWATCH_MQTT_PASSWORD}, never the password itself."
    )
    client_id: str | None = Field(
        default=None, min_length=1, description="MQTT client id; None uses worker_id."
    )
    topic_prefix: str = Field(default="citywatch/v1", min_length=1, description="Prefix of every topic.")
    tls: bool = Field(default=False, description="Connect with TLS (usually port 8883).")
    ca_file: Path | None = Field(
        default=None, description="CA bundle to verify the broker; None uses the system's."
    )
    cert_file: Path | None = Field(default=None, description="Client certificate for mutual TLS.")
    key_file: Path | None = Field(default=None, description="Private key of cert_file.")
    keepalive: int = Field(default=60, ge=5, le=3600, description="Seconds between MQTT keep-alive pings.")

    @model_validator(mode="before")
    @classmethod
    def _no_embedded_broker(cls, data: Any) -> Any:
        if isinstance(data, dict) and "embedded_broker" in data:
            raise ConfigProblem.at(
                ("embedded_broker",),
                "embedded_broker is gone: `citywatch run` never starts a broker (one without logins "
                "would take the real broker's port while it is down)",
                "delete the line; run Mosquitto (deploy/mosquitto/README.md), or try everything on "
                "one machine with `citywatch demo`",
            )
        return data

    @field_validator("topic_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if any(c in value for c in "+#") or value.startswith("/") or value.endswith("/") or "//" in value:
            raise ConfigProblem.at(
                (),
                f"topic prefix {value!r} must not contain '+', '#', empty levels or a leading/trailing '/'",
                "write levels separated by single '/', e.g. citywatch/v1",
            )
        return value

    @model_validator(mode="after")
    def _check_auth_and_tls(self) -> MqttConfig:
        problems: list[Problem] = []
        if self.password is not None and self.username is None:
            problems.append(Problem(("password",), "password given without username", "add `username:`"))
        if (self.cert_file is None) != (self.key_file is None):
            missing = "key_file" if self.key_file is None else "cert_file"
            problems.append(
                Problem(
                    (missing,), "cert_file and key_file go together", f"add `{missing}:` or remove the other"
                )
            )
        for name in ("ca_file", "cert_file", "key_file"):
            if getattr(self, name) is not None and not self.tls:
                problems.append(Problem((name,), f"{name} is set but tls is false", "set `tls: true`"))
        if problems:
            raise ConfigProblem(problems)
        return self


class ApiConfig(_Section):
    """Where the case API lives (the detector only reports to it over MQTT)."""

    url: str = Field(default="http://127.0.0.1:8000", description="Base URL of the case API.")
    database_url: str | None = Field(
        default=None,
        repr=False,
        description="SQLAlchemy URL of the case database, e.g. sqlite:///var/citywatch.db or "
        "postgresql+psycopg://citywatch:${CITYWATCH_DB_PASSWORD}@db/citywatch.",
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.lower().startswith(("http://", "https://")):
            raise ConfigProblem.at(
                (), f"API URL {mask_url(value)!r} is not http(s)", "write e.g. http://127.0.0.1:8000"
            )
        return value.rstrip("/")

    @field_validator("database_url")
    @classmethod
    def _check_db(cls, value: str | None) -> str | None:
        if value is not None and "://" not in value:
            raise ConfigProblem.at(
                (),
                "database_url is not a URL",
                "write e.g. sqlite:///var/citywatch.db or postgresql+psycopg://user:${PW}@host/db",
            )
        return value


class OutboxConfig(_Section):
    """Durable on-disk queue of events not yet acknowledged by the broker."""

    dir: Path = Field(default=Path("var/outbox"), description="Directory of the outbox.")
    max_events: int = Field(
        default=100_000,
        ge=1,
        description="Most unacknowledged events kept; an alarm at 90 %; when full, new events are "
        "refused loudly (never dropped silently).",
    )


class EvidenceConfig(_Section):
    """Annotated evidence JPEGs."""

    dir: Path = Field(default=Path("var/evidence"), description="Directory for evidence images.")
    jpeg_quality: int = Field(default=85, ge=1, le=100, description="JPEG quality 1-100.")
    max_width: int = Field(
        default=1280, ge=64, le=7680, description="Wider frames are scaled down to this width."
    )


class DefaultsConfig(_Section):
    """Settings every stream starts from."""

    rules: RulesConfig = Field(
        default_factory=lambda: RulesConfig(), description="Rule parameters for all streams."
    )


class LocationConfig(_Section):
    """Where the camera looks (copied into every violation event)."""

    lat: float | None = Field(default=None, ge=-90.0, le=90.0, description="Latitude, WGS84 degrees.")
    lon: float | None = Field(default=None, ge=-180.0, le=180.0, description="Longitude, WGS84 degrees.")
    address: str | None = Field(default=None, description="Street address.")
    grid: str | None = Field(default=None, description="Grid (网格) responsible for this view.")
    road: str | None = Field(default=None, description="Road (路) for the road-chief routing.")

    @model_validator(mode="after")
    def _both_or_neither(self) -> LocationConfig:
        if (self.lat is None) != (self.lon is None):
            missing = "lon" if self.lon is None else "lat"
            raise ConfigProblem.at(
                (missing,), "lat and lon go together", f"add `{missing}:` or remove the other"
            )
        return self


class ZoneConfig(_Section):
    """A polygon in the frame and the rules that apply inside it."""

    id: str = Field(pattern=ID_PATTERN, description="Zone id, unique within its stream.")
    name: str | None = Field(default=None, description="Human-readable name.")
    polygon: Annotated[
        list[tuple[float, float]], BeforeValidator(check_polygon_shape), AfterValidator(check_polygon)
    ] = Field(
        description="Corners as [x, y] fractions of frame width and height (0..1), at least 3, in order."
    )
    rules: Annotated[list[str], AfterValidator(check_rule_names)] = Field(
        min_length=1, description=f"Rules checked in this zone: {', '.join(RULE_NAMES)}."
    )
    params: RuleOverrides = Field(
        default_factory=dict, description="Per-zone rule overrides: {rule name: {parameter: value}}."
    )
    _effective: RulesConfig | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _check_params(self) -> ZoneConfig:
        problems = stray_param_problems(self.rules, self.params)
        if problems:
            raise ConfigProblem(problems)
        return self

    @property
    def effective_rules(self) -> RulesConfig:
        """Defaults, then stream overrides, then this zone's ``params`` (set by CitywatchConfig)."""
        return self._effective if self._effective is not None else RulesConfig().merged(self.params)


class StreamConfig(_Section):
    """One camera or drone feed."""

    id: str = Field(pattern=ID_PATTERN, description="Stream id: MQTT topics, cases and files use it.")
    name: str | None = Field(default=None, description="Human-readable name.")
    kind: Literal["camera", "drone"] = Field(
        default="camera", description="camera (fixed view) or drone (survey)."
    )
    url: Annotated[str, AfterValidator(check_source_url)] = Field(
        min_length=1, repr=False, description="Source: file path, file://, rtsp://, rtsps:// or http(s)://."
    )
    detect_url: Annotated[str, AfterValidator(check_source_url)] | None = Field(
        default=None,
        repr=False,
        description="Low-resolution substream to detect on; url is opened for evidence.",
    )
    sample_interval_s: float = Field(
        default=2.0, gt=0.0, le=3600.0, description="Seconds between sampled frames."
    )
    resolution: str | None = Field(
        default=None,
        pattern=r"^[1-9][0-9]{1,4}x[1-9][0-9]{1,4}$",
        description="Declared WIDTHxHEIGHT of what is decoded (the detect_url substream when set): "
        "`citywatch run --ray` spreads streams by it. None: 1920x1080, or 640x360 with a detect_url.",
    )
    start_time: AwareDatetime | None = Field(
        default=None,
        description="Wall time of a file's first frame (ISO 8601 with offset); None reads file metadata.",
    )
    enabled: bool = Field(default=True, description="false keeps the entry but does not open the stream.")
    collect: bool = Field(
        default=True, description="false: no frame of this stream is kept for labelling (see `collect`)."
    )
    file_speed: float = Field(
        default=1.0,
        ge=0.0,
        le=1000.0,
        description="File sources under `citywatch run`: playback speed against real time (1 = as a live "
        "camera, 0 = as fast as possible). `citywatch replay` always runs as fast as possible.",
    )
    snapshot_s: float | None = Field(
        default=None,
        ge=0.0,
        le=86400.0,
        description="Seconds between snapshots of this stream (the console draws its zones on them); "
        "None: the top-level snapshot_s; 0 = off.",
    )
    location: LocationConfig = Field(
        default_factory=lambda: LocationConfig(), description="Where the camera looks."
    )
    ingest: IngestConfig = Field(default_factory=lambda: IngestConfig(), description="Reconnects, stalls.")
    zones: list[ZoneConfig] = Field(default_factory=list, description="Zones and the rules inside them.")
    rules: RuleOverrides = Field(
        default_factory=dict, description="Per-stream rule overrides: {rule name: {parameter: value}}."
    )
    rule_models: Annotated[RuleModels, AfterValidator(check_rule_models)] = Field(
        default_factory=dict,
        description=RULE_MODELS_DESCRIPTION + " Overrides the global `rule_models` for this stream.",
    )
    _effective: RulesConfig | None = PrivateAttr(None)

    @field_validator("rules")
    @classmethod
    def _check_rules(cls, value: RuleOverrides) -> RuleOverrides:
        check_rule_names(value)
        return value

    @model_validator(mode="after")
    def _unique_zones(self) -> StreamConfig:
        problems = [p.under(("zones",)) for p in duplicate_zone_ids(enumerate(z.id for z in self.zones))]
        if problems:
            raise ConfigProblem(problems)
        return self

    @property
    def display_url(self) -> str:
        """``url`` with any password replaced by ``***``: the only form to log or show."""
        return mask_url(self.url)

    @property
    def display_detect_url(self) -> str | None:
        return None if self.detect_url is None else mask_url(self.detect_url)

    @property
    def label(self) -> str:
        return self.name or self.id

    @property
    def effective_rules(self) -> RulesConfig:
        """Defaults with this stream's overrides (set by CitywatchConfig validation)."""
        return self._effective if self._effective is not None else RulesConfig().merged(self.rules)

    def zone(self, zone_id: str) -> ZoneConfig:
        for zone in self.zones:
            if zone.id == zone_id:
                return zone
        raise KeyError(f"stream {self.id!r} has no zone {zone_id!r}")


class CitywatchConfig(_Section):
    """The whole ``streams.yaml``."""

    version: Literal[1] = Field(description="Schema version of this file; write `version: 1`.")
    worker_id: str = Field(
        default="detector-1", pattern=ID_PATTERN, description="This detector's name in MQTT topics."
    )
    live_reload_s: float = Field(
        default=2.0,
        ge=0.0,
        le=3600.0,
        description="`citywatch run` looks at this file every live_reload_s seconds and applies a valid edit "
        "of the streams (and defaults) without a restart; 0 = off.",
    )
    mqtt: MqttConfig = Field(default_factory=lambda: MqttConfig(), description="Broker connection.")
    api: ApiConfig = Field(default_factory=lambda: ApiConfig(), description="Case API.")
    model: ModelConfig = Field(
        default_factory=lambda: ModelConfig(), description="Detection model of every rule not in rule_models."
    )
    rule_models: Annotated[RuleModels, AfterValidator(check_rule_models)] = Field(
        default_factory=dict, description=RULE_MODELS_DESCRIPTION
    )
    models: ModelsConfig = Field(
        default_factory=lambda: ModelsConfig(), description="Following the manifest without a restart."
    )
    outbox: OutboxConfig = Field(default_factory=lambda: OutboxConfig(), description="Durable event outbox.")
    evidence: EvidenceConfig = Field(default_factory=lambda: EvidenceConfig(), description="Evidence images.")
    snapshot_s: float = Field(
        default=60.0,
        ge=0.0,
        le=86400.0,
        description="A JPEG of each stream's view (at most 640 px wide) is published, retained, on "
        "streams/{id}/snapshot when it goes live and then every snapshot_s seconds; 0 = off.",
    )
    metrics: MetricsConfig = Field(
        default_factory=lambda: MetricsConfig(), description="Prometheus metrics and health checks."
    )
    collect: CollectConfig = Field(
        default_factory=lambda: CollectConfig(), description="Frames kept for labelling (off by default)."
    )
    defaults: DefaultsConfig = Field(
        default_factory=lambda: DefaultsConfig(), description="Defaults for all streams."
    )
    streams: list[StreamConfig] = Field(default_factory=list, description="Camera and drone feeds.")

    @model_validator(mode="after")
    def _cross_stream(self) -> CitywatchConfig:
        problems = duplicate_stream_ids(enumerate(stream.id for stream in self.streams))
        duplicates = {p.loc[1] for p in problems}
        for index, stream in enumerate(self.streams):
            if index not in duplicates:
                problems += _bind_rules(self.defaults.rules, stream, ("streams", index))
        if problems:
            raise ConfigProblem(problems)
        return self

    @property
    def enabled_streams(self) -> list[StreamConfig]:
        return [s for s in self.streams if s.enabled]

    def stream(self, stream_id: str) -> StreamConfig:
        for stream in self.streams:
            if stream.id == stream_id:
                return stream
        raise KeyError(f"no stream {stream_id!r} in the config")


def _bind_rules(defaults: RulesConfig, stream: StreamConfig, loc: Loc) -> list[Problem]:
    """Merge stream then zone overrides onto the defaults; remember the results."""
    try:
        stream._effective = defaults.merged(stream.rules)
    except ValidationError as exc:
        return problems_from_validation_error(exc, RulesConfig, (*loc, "rules"))
    problems: list[Problem] = []
    for index, zone in enumerate(stream.zones):
        try:
            zone._effective = stream._effective.merged(zone.params)
        except ValidationError as exc:
            problems += problems_from_validation_error(exc, RulesConfig, (*loc, "zones", index, "params"))
    return problems
