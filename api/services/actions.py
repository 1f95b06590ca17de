"""What the caller may do with one case now (``GET /cases/{id}/actions``), for the console's buttons.

Derived from the lifecycle's own rules, never a copy of them: an action is offered when
``check_permission`` (its roles, a field unit's own case) passes and the case's status is one of
its ``TRANSITIONS`` sources, and when nothing about the case itself would refuse it whatever the
input (a re-check needs a camera, a case already on hold cannot be held again). A correction
(``POST /cases/{id}/correct``) follows ``api.services.reviews``: its roles, a camera or drone
detection, not a merged duplicate. Each action carries the fields its route takes, read from the
route's own body model (its JSON Schema): a reason from a list, a unit, hours, a note, a photo.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from api.errors import ForbiddenError
from api.models import Case, CaseStatus
from api.schemas import DispatchIn, MergeIn, NoteIn, PostponeIn, RejectIn, RequiredNoteIn
from api.schemas_reviews import CorrectIn
from api.services.auth import Principal
from api.services.lifecycle import TRANSITIONS, Action, Desk, check_permission
from api.services.reviews import CORRECTORS, MACHINE_SOURCES
from api.services.routing import NoRouteError

CORRECT = "correct"
JSON = "application/json"
MULTIPART = "multipart/form-data"

BODIES: dict[Action | str, type[BaseModel]] = {
    Action.register: NoteIn,
    Action.reject: RejectIn,
    Action.merge: MergeIn,
    Action.dispatch: DispatchIn,
    Action.return_: RequiredNoteIn,
    Action.accept: NoteIn,
    Action.postpone: PostponeIn,
    Action.hold: RequiredNoteIn,
    Action.verify: NoteIn,
    Action.close: NoteIn,
    Action.rework: RequiredNoteIn,
    Action.recheck: NoteIn,
    Action.comment: RequiredNoteIn,
    CORRECT: CorrectIn,
}
"""The JSON body of each action's route (api/routes/lifecycle.py, api/routes/reviews.py); ``dispose``
takes a form instead (``DISPOSE_FIELDS``). tests/unit/test_console_api.py checks these against the
OpenAPI of the routes."""


@dataclass(frozen=True, slots=True)
class ActionField:
    name: str
    kind: str  # text | choice | number | integer | box | file
    required: bool
    choices: list[str] | None = None
    labels: dict[str, str] | None = None  # choice -> a name to show (units)
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    min_length: int | None = None
    max_length: int | None = None
    accept: str | None = None  # file: the media types taken


@dataclass(frozen=True, slots=True)
class CaseAction:
    action: str
    path: str
    content_type: str
    target: str | None  # the status it leads to; None: the status stays
    fields: list[ActionField] = field(default_factory=list)
    method: str = "POST"


DISPOSE_FIELDS = [
    ActionField("note", "text", required=False, max_length=2000),
    ActionField("photo", "file", required=False, accept="image/jpeg"),
]


def _plain(prop: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """A property's schema without ``$ref`` and without the ``null`` of an optional field."""
    if "anyOf" in prop:
        options = [p for p in prop["anyOf"] if p.get("type") != "null"]
        if len(options) == 1:
            prop = {**{k: v for k, v in prop.items() if k != "anyOf"}, **options[0]}
    ref = prop.get("$ref")
    if isinstance(ref, str):
        prop = {**defs[ref.rsplit("/", 1)[-1]], **{k: v for k, v in prop.items() if k != "$ref"}}
    return prop


def _kind(prop: dict[str, Any]) -> str:
    if "enum" in prop:
        return "choice"
    if prop.get("type") == "array":
        return "box"
    return {"integer": "integer", "number": "number"}.get(str(prop.get("type")), "text")


def body_fields(model: type[BaseModel]) -> list[ActionField]:
    """The fields of a body model, from its JSON Schema."""
    schema = model.model_json_schema()
    defs, required = schema.get("$defs", {}), set(schema.get("required", []))
    fields = []
    for name, raw in schema.get("properties", {}).items():
        prop = _plain(raw, defs)
        low = prop.get("exclusiveMinimum", prop.get("minimum"))
        fields.append(
            ActionField(
                name=name,
                kind=_kind(prop),
                required=name in required,
                choices=list(prop["enum"]) if "enum" in prop else None,
                default=prop.get("default"),
                minimum=low,
                maximum=prop.get("maximum"),
                exclusive_minimum="exclusiveMinimum" in prop,
                min_length=prop.get("minLength", prop.get("minItems")),
                max_length=prop.get("maxLength", prop.get("maxItems")),
            )
        )
    return fields


def _blocked(case: Case, action: Action) -> bool:
    """Something about the case refuses ``action`` whatever the input."""
    if action is Action.recheck:
        return not case.stream
    if action is Action.hold:
        return case.on_hold
    return False


def correctable(case: Case, principal: Principal) -> bool:
    """``POST /cases/{id}/correct`` would take a box from ``principal`` (api.services.reviews)."""
    return (
        principal.role in CORRECTORS
        and case.source in MACHINE_SOURCES
        and case.bbox is not None
        and case.status != CaseStatus.merged
    )


def _dispatch_unit(desk: Desk, case: Case, unit: ActionField) -> ActionField:
    """The unit field with the routing table's units as choices and the routed one as default."""
    units = desk.routing.units
    try:
        routed: str | None = desk.routing.route(case.rule, case.grid, case.road).unit
    except NoRouteError:
        routed = None
    return ActionField(
        name=unit.name,
        kind="choice",
        required=routed is None,
        choices=sorted(units),
        labels={uid: u.name for uid, u in units.items()},
        default=routed,
        min_length=unit.min_length,
        max_length=unit.max_length,
    )


def _fields(desk: Desk, case: Case, action: Action | str) -> list[ActionField]:
    if action is Action.dispose:
        return list(DISPOSE_FIELDS)
    fields = body_fields(BODIES[action])
    if action is Action.dispatch:
        fields = [_dispatch_unit(desk, case, f) if f.name == "unit" else f for f in fields]
    return fields


def available_actions(desk: Desk, case: Case, principal: Principal) -> list[CaseAction]:
    """The actions ``principal`` may take on ``case`` now, in lifecycle order (comment last)."""
    offered: list[CaseAction] = []
    for action, transition in TRANSITIONS.items():
        if case.status not in transition.sources or _blocked(case, action):
            continue
        try:
            check_permission(case, action, principal)
        except ForbiddenError:
            continue
        if action is Action.comment and correctable(case, principal):
            offered.append(_action(desk, case, CORRECT, None))
        target = transition.target.value if transition.target is not None else None
        offered.append(_action(desk, case, action, target))
    if correctable(case, principal) and not any(a.action == CORRECT for a in offered):
        offered.append(_action(desk, case, CORRECT, None))
    return offered


def _action(desk: Desk, case: Case, action: Action | str, target: str | None) -> CaseAction:
    name = action.value if isinstance(action, Action) else action
    return CaseAction(
        action=name,
        path=f"/cases/{case.id}/{name}",
        content_type=MULTIPART if action is Action.dispose else JSON,
        target=target,
        fields=_fields(desk, case, action),
    )
