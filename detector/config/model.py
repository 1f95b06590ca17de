"""The ``model`` section of ``streams.yaml`` and the ``rule_models`` that name a model per rule.

Kept apart from ``detector.config.schema`` (which embeds it globally and per stream) so the schema file
stays small. ``model:`` is the model of every rule that ``rule_models`` does not name; a stream's own
``rule_models`` overrides the global one rule by rule. Which sections share one loaded model (one backend
instance) is decided in ``detector.inference.rule_models``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from detector.config.errors import ConfigProblem
from detector.config.validators import check_rule_names

BackendName = Literal["ultralytics", "onnx", "openvino"]
TuneMode = Literal["auto", "off"]


class ModelConfig(BaseModel):
    """Which detection model to run and how."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(
        default=None,
        min_length=1,
        description="Model name in models/manifest.yaml; None uses the manifest default.",
    )
    path: Path | None = Field(default=None, description="Explicit weights file instead of a manifest name.")
    backend: BackendName | None = Field(
        default=None,
        description="Inference backend; None: the fastest export measured on this host (`citywatch models "
        "tune`, see `tune`), else the manifest's.",
    )
    tune: TuneMode = Field(
        default="auto",
        description="With no `backend`: `auto` measures the manifest's exports on this CPU at start-up when "
        "this host has no tune cache yet (a few seconds) and caches the winner; `off` uses the tune cache "
        "if there is one, else the manifest's backend.",
    )
    conf: float = Field(default=0.25, ge=0.0, le=1.0, description="Detection confidence threshold.")
    iou: float = Field(default=0.5, gt=0.0, le=1.0, description="Non-maximum suppression IoU threshold.")
    imgsz: int | None = Field(
        default=None, ge=32, le=4096, description="Input size, multiple of 32; None uses the manifest's."
    )
    batch: int = Field(default=8, ge=1, le=64, description="Largest batch of frames per inference call.")
    tiles: int = Field(
        default=1,
        ge=1,
        le=4,
        description="1: the whole frame only. n >= 2: also an n x n grid of overlapping tiles, merged with "
        "the whole-frame pass (small, far objects reach the model at up to n times the detail; up to 1 + n*n "
        "runs per frame; frames under 1.25 times the model input are not sliced). See "
        "detector/inference/tiling.py.",
    )
    zoom_imgsz: int | None = Field(
        default=None,
        ge=64,
        le=4096,
        description="Also run the model on the whole frame at this larger input size (e.g. 960 for a 640 "
        "model) to confirm the native pass: each unsure native box (score 0.2 to 0.5) takes the best score "
        "the zoomed pass gives it, so far, small objects get the larger pass's detail; boxes only the zoomed "
        "pass sees are dropped. A zoomed pass costs about (zoom_imgsz / imgsz)^2 of the model's work (less "
        "for a wide frame on a dynamic export); a stream's frames get one at most every zoom_every_s. "
        "None: off. See detector/inference/zoom.py.",
    )
    zoom_every_s: float = Field(
        default=10.0,
        ge=0.0,
        le=3600.0,
        description="A stream's frames go to the zoomed pass at most this often (frame time); in between, a "
        "box that stays where a zoomed pass confirmed it (IoU >= 0.7, within 60 s) keeps that pass's score: "
        "a parked car stays confirmed, and the zoomed pass costs a fraction of its per-frame cost. 0: no "
        "limit (a frame whose unsure boxes are all remembered still skips the pass).",
    )
    zoom_model: str | None = Field(
        default=None,
        min_length=1,
        description="Manifest name[@version] of the model that runs the zoomed pass (same classes), e.g. "
        "one fine-tuned for far vehicles; None: the model itself. Needs zoom_imgsz.",
    )

    @field_validator("tune", mode="before")
    @classmethod
    def _yaml_off(cls, value: object) -> object:
        """YAML reads a bare ``off`` / ``on`` as a boolean: take them as the words."""
        if isinstance(value, bool):
            return "auto" if value else "off"
        return value

    @field_validator("imgsz", "zoom_imgsz")
    @classmethod
    def _check_imgsz(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and value % 32:
            fix = f"use {max(32, round(value / 32) * 32)}"
            raise ConfigProblem.at((), f"{info.field_name} {value} is not a multiple of 32", fix)
        return value

    @model_validator(mode="after")
    def _name_or_path(self) -> ModelConfig:
        if self.zoom_model is not None and self.zoom_imgsz is None:
            raise ConfigProblem.at(
                ("zoom_model",),
                "zoom_model runs the zoomed pass, but zoom_imgsz is not set",
                "add zoom_imgsz: 960",
            )
        if self.name is not None and self.path is not None:
            raise ConfigProblem.at(
                ("path",), "give either model.name or model.path, not both", "remove one of them"
            )
        return self


#: ``rule_models:`` — rule name -> the model section that serves it
RuleModels = dict[str, ModelConfig]


def check_rule_models(value: RuleModels) -> RuleModels:
    """Every key of a ``rule_models`` mapping is a rule name (with a did-you-mean hint)."""
    keys: dict[str, dict[str, Any]] = {key: {} for key in value}
    check_rule_names(keys)  # problems located at the mapping's keys
    return value


RULE_MODELS_DESCRIPTION = (
    "Which model serves which rule: {rule name: a model section like `model:`}. A rule not listed "
    "here is served by `model:`."
)


class ModelsConfig(BaseModel):
    """How a running detector follows ``models/manifest.yaml`` (``models:`` in streams.yaml)."""

    model_config = ConfigDict(extra="forbid")

    watch_s: float = Field(
        default=5.0,
        ge=0.0,
        le=3600.0,
        description="Seconds between looks at the manifest (its mtime, then its content hash). When a model "
        "section that names no version (`name: null` = the default, or a bare name = its highest version) "
        "resolves to another artefact — a promotion, a rollback — the new model is loaded beside the running "
        "one and swapped in between two batches, without a restart; a section that pins name@version or a "
        "path never moves. 0 = off.",
    )
