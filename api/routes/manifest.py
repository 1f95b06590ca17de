"""``GET /models``: the data team's view of the models (api/services/manifest_view.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.deps import CurrentUser, SettingsDep
from api.routes.common import AUTH_ERRORS
from api.services.manifest_view import models_view
from api.services.reviews import REVIEW_READERS, check_role

router = APIRouter(tags=["models"], responses=AUTH_ERRORS)


class ModelPublic(BaseModel):
    ref: str
    name: str
    version: str
    default: bool = Field(description="the model the manifest's default resolves to")
    backend: str
    precision: str
    imgsz: int
    classes: list[str]
    rule_labels: dict[str, str]
    exports: list[str]
    metrics: dict[str, Any] | None
    created: str
    data_hash: str | None
    licence: str | None
    source: str | None
    card_path: str
    card: str | None = Field(description="the model card (markdown), at most 64 KiB; null: unreadable")


class RuleModelPublic(BaseModel):
    rule: str
    model: str | None = Field(description="name@version serving the rule; null: no manifest default")
    streams: dict[str, str | None] = Field(description="streams whose own rule_models name another model")


class RuleMapPublic(BaseModel):
    source: str | None = Field(description="the streams file (CITYWATCH_STREAMS_FILE); null: not set")
    error: str | None
    rules: list[RuleModelPublic]


class CollectionPublic(BaseModel):
    dir: str
    frames: int
    unreadable: int
    truncated: bool = Field(description="more sidecars than are counted per request (50,000, the newest)")
    streams: dict[str, dict[str, Any]] = Field(
        description="per stream: frames, reasons, verdicts (the desk's), labelled, last (capture time)"
    )
    error: str | None = None


class ModelsPublic(BaseModel):
    manifest: str
    error: str | None = Field(description="why the manifest could not be read")
    default: str | None
    default_ref: str | None
    models: list[ModelPublic]
    history: list[dict[str, Any]] = Field(description="promotions and rollbacks, oldest first")
    rules: RuleMapPublic
    collection: CollectionPublic | None = Field(description="null: CITYWATCH_COLLECT_DIR not set")


@router.get("/models", response_model=ModelsPublic)
def get_models(user: CurrentUser, settings: SettingsDep) -> Any:
    """The manifest's models (card, metrics), the promotion history, which model serves which rule
    (CITYWATCH_STREAMS_FILE) and the collection's counts (CITYWATCH_COLLECT_DIR). Reviewer,
    dispatcher or admin."""
    check_role(user, REVIEW_READERS, "read the models")
    return models_view(settings.streams_file, settings.collect_dir)
