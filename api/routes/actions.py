"""``GET /cases/{id}/actions``: what the caller may do with the case now (the console's buttons)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from api.deps import CaseReader, DeskDep, SessionDep
from api.routes.cases import CaseId, visible_case
from api.routes.common import AUTH_ERRORS, NOT_FOUND
from api.services.actions import available_actions

router = APIRouter(prefix="/cases", tags=["cases"], responses=AUTH_ERRORS)


class ActionFieldPublic(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["text", "choice", "number", "integer", "box", "file"] = Field(
        description="text: free text; choice: one of `choices`; box: [x1, y1, x2, y2] pixels of the "
        "evidence frame; file: an upload (`accept`)"
    )
    required: bool
    choices: list[str] | None = None
    labels: dict[str, str] | None = Field(default=None, description="a name to show for each choice")
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    min_length: int | None = None
    max_length: int | None = None
    accept: str | None = None


class ActionPublic(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: str
    method: Literal["POST"]
    path: str
    content_type: Literal["application/json", "multipart/form-data"]
    target: str | None = Field(description="the status the action leads to; null: the status stays")
    fields: list[ActionFieldPublic]


class ActionsPublic(BaseModel):
    case_id: int
    status: str
    role: str
    data: list[ActionPublic]


@router.get("/{case_id}/actions", response_model=ActionsPublic, responses=NOT_FOUND)
def case_actions(session: SessionDep, desk: DeskDep, reader: CaseReader, case_id: CaseId) -> ActionsPublic:
    """The lifecycle actions (and ``correct``) the caller may take on this case now, in lifecycle
    order, each with the fields its route takes. The same rules as the actions themselves (the
    role, a field unit's own case, the case's status); an anonymous reader may take none."""
    case = visible_case(session, case_id, reader)
    actions = available_actions(desk, case, reader)
    return ActionsPublic(
        case_id=case.id,
        status=case.status,
        role=reader.role.value,
        data=[ActionPublic.model_validate(asdict(a)) for a in actions],
    )
