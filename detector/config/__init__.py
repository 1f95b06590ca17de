"""The ``streams.yaml`` config: its schema, its loader and ``citywatch config check``.

``loader`` reads the file (YAML with positions, ``${VAR}`` secrets, every problem at once) into the
``schema`` models; ``errors``, ``validators`` and ``yamlparse`` are its parts; ``check`` and
``labels`` are the ``config check`` command. The loader's public names are re-exported here.
"""

from __future__ import annotations

from detector.config.loader import (
    ApiConfig,
    CitywatchConfig,
    ConfigError,
    ConfigFileError,
    ConfigIssue,
    DefaultsConfig,
    EvidenceConfig,
    LoadedConfig,
    LocationConfig,
    ModelConfig,
    MqttConfig,
    OutboxConfig,
    StreamConfig,
    ZoneConfig,
    load_config,
    load_config_text,
    locate,
    mask_url,
)

__all__ = [
    "ApiConfig",
    "CitywatchConfig",
    "ConfigError",
    "ConfigFileError",
    "ConfigIssue",
    "DefaultsConfig",
    "EvidenceConfig",
    "LoadedConfig",
    "LocationConfig",
    "ModelConfig",
    "MqttConfig",
    "OutboxConfig",
    "StreamConfig",
    "ZoneConfig",
    "load_config",
    "load_config_text",
    "locate",
    "mask_url",
]
