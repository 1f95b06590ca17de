"""The case lifecycle of DESIGN.md as one table, and ``apply`` that walks it.

candidate -register-> registered -dispatch-> dispatched -accept-> in_progress -dispose-> disposed
-verify-> verifying -close-> closed; reject / merge end a candidate or a registered case; return
(退回) sends a dispatched case back to the dispatcher; postpone (延期) and hold (挂账) keep the
status; rework (返工) sends a disposed or verifying case back to in_progress.

``apply`` checks the role (403), the field unit's ownership (403) and the status (409 naming the
allowed actions), changes the case and appends one ``CaseEvent``. The caller holds the row lock
and commits. Answers from the camera re-check call it with ``system=True`` and the detector's
name: the detector role has no lifecycle action of its own over HTTP.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from api.core.config import Settings
from api.core.evidence import EvidenceStore
from api.core.logs import about
from api.errors import ForbiddenError, IllegalTransitionError, InvalidRequestError
from api.models import ENDED_STATUSES, Case, CaseEvent, CaseStatus, RejectReason
from api.services.auth import Principal, Role
from api.services.routing import NoRouteError, RoutingTable

log = logging.getLogger(__name__)

S = CaseStatus


class Action(enum.StrEnum):
    register = "register"
    reject = "reject"
    merge = "merge"
    dispatch = "dispatch"
    return_ = "return"
    accept = "accept"
    postpone = "postpone"
    hold = "hold"
    dispose = "dispose"
    verify = "verify"
    close = "close"
    rework = "rework"
    recheck = "recheck"
    comment = "comment"


@dataclass(frozen=True, slots=True)
class Transition:
    sources: frozenset[CaseStatus]
    target: CaseStatus | None  # None: the status stays
    roles: frozenset[Role]
    own_unit: bool = False  # a field unit must hold the case


_REVIEW = frozenset({Role.admin, Role.reviewer})
_DISPATCH = frozenset({Role.admin, Role.dispatcher})
_UNIT = frozenset({Role.admin, Role.field_unit})
_STAFF = frozenset({Role.admin, Role.reviewer, Role.dispatcher, Role.field_unit})
_LIVE = frozenset(set(CaseStatus) - ENDED_STATUSES)

TRANSITIONS: dict[Action, Transition] = {
    Action.register: Transition(frozenset({S.candidate}), S.registered, _REVIEW),
    Action.reject: Transition(frozenset({S.candidate, S.registered}), S.rejected, _REVIEW),
    Action.merge: Transition(frozenset({S.candidate, S.registered}), S.merged, _REVIEW),
    Action.dispatch: Transition(frozenset({S.registered}), S.dispatched, _DISPATCH),
    Action.return_: Transition(frozenset({S.dispatched}), S.registered, _UNIT, own_unit=True),
    Action.accept: Transition(frozenset({S.dispatched}), S.in_progress, _UNIT, own_unit=True),
    Action.postpone: Transition(frozenset({S.dispatched, S.in_progress}), None, _DISPATCH),
    Action.hold: Transition(frozenset({S.dispatched, S.in_progress}), None, _DISPATCH),
    Action.dispose: Transition(frozenset({S.in_progress}), S.disposed, _UNIT, own_unit=True),
    Action.verify: Transition(frozenset({S.disposed}), S.verifying, _REVIEW),
    Action.close: Transition(frozenset({S.disposed, S.verifying}), S.closed, _REVIEW),
    Action.rework: Transition(frozenset({S.disposed, S.verifying}), S.in_progress, _REVIEW),
    Action.recheck: Transition(frozenset({S.candidate, S.disposed, S.verifying}), None, _REVIEW),
    Action.comment: Transition(frozenset(CaseStatus), None, _STAFF, own_unit=True),
}


def allowed_actions(status: str, role: Role | None = None) -> list[str]:
    """Actions legal from ``status`` (for ``role`` when given), in lifecycle order."""
    return [
        a.value
        for a, t in TRANSITIONS.items()
        if status in t.sources and a is not Action.comment and (role is None or role in t.roles)
    ]


@dataclass(frozen=True)
class Desk:
    """What the lifecycle needs besides the database: routing, settings, evidence, the clock."""

    routing: RoutingTable
    settings: Settings
    store: EvidenceStore
    clock: Callable[[], datetime]


@dataclass(frozen=True, slots=True)
class _Ctx:
    session: Session
    desk: Desk
    principal: Principal
    now: datetime


@dataclass
class Params:
    note: str | None = None
    reason: RejectReason | None = None
    into: int | None = None
    unit: str | None = None
    hours: float | None = None
    evidence_sha256: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


def check_permission(case: Case, action: Action, principal: Principal) -> Transition:
    t = TRANSITIONS[action]
    if principal.role not in t.roles:
        may = ", ".join(sorted(r.value for r in t.roles))
        raise ForbiddenError(f"role {principal.role.value!r} may not {action.value!r} a case (roles: {may})")
    if principal.role is Role.field_unit and t.own_unit and case.unit != principal.unit:
        raise ForbiddenError(f"case {case.id} is not held by unit {principal.unit!r}")
    return t


def _event(case: Case, kind: str, actor: str, role: str, frm: str, p: Params, at: datetime) -> CaseEvent:
    return CaseEvent(
        case_id=case.id,
        kind=kind,
        actor=actor,
        role=role,
        from_status=frm,
        to_status=case.status,
        at=at,
        note=p.note,
        evidence_sha256=p.evidence_sha256,
        data=p.data or None,
    )


def apply(
    session: Session,
    desk: Desk,
    case: Case,
    action: Action,
    principal: Principal,
    params: Params | None = None,
    *,
    system: bool = False,
) -> CaseEvent:
    """Check and perform ``action`` on the locked ``case``; add its event to the session."""
    p = params if params is not None else Params()
    t = TRANSITIONS[action] if system else check_permission(case, action, principal)
    if case.status not in t.sources:
        raise IllegalTransitionError(action.value, case.status, allowed_actions(case.status))
    now = desk.clock()
    before = case.status
    effect = _EFFECTS.get(action)
    if effect is not None:
        effect(_Ctx(session, desk, principal, now), case, p)
    if t.target is not None:
        case.status = t.target.value
    case.updated_at = now
    event = _event(case, action.value, principal.actor, principal.role.value, before, p, now)
    session.add(event)
    log.info(
        "case %s: %s by %s (%s): %s -> %s", case.id, action.value, principal.actor, principal.role.value,
        before, case.status, extra=about(case.stream, case.violation_id, case.id),
    )  # fmt: skip
    return event


def _judged(ctx: _Ctx, case: Case) -> None:
    """The desk's latest judgement of the detection (``GET /reviews`` pages by it)."""
    case.reviewed_at, case.reviewed_by = ctx.now, ctx.principal.actor


def _register(ctx: _Ctx, case: Case, _p: Params) -> None:
    _judged(ctx, case)


def _reject(ctx: _Ctx, case: Case, p: Params) -> None:
    if p.reason is None:
        raise InvalidRequestError("reject needs a reason: false_positive, out_of_scope or self_resolved")
    case.resolution = p.reason.value
    p.data["reason"] = p.reason.value
    _judged(ctx, case)


def _merge(ctx: _Ctx, case: Case, p: Params) -> None:
    if p.into is None or p.into == case.id:
        raise InvalidRequestError("merge needs `into`: the id of another case")
    target = ctx.session.get(Case, p.into, with_for_update=True)
    if target is None:
        raise InvalidRequestError(f"case {p.into} (merge target) does not exist")
    if target.status in ENDED_STATUSES or target.status == S.candidate:
        raise InvalidRequestError(f"case {p.into} is {target.status}: merge into a registered, open case")
    mark_duplicate(ctx.session, case, target, actor=ctx.principal, now=ctx.now)
    p.data["into"] = target.id


def mark_duplicate(
    session: Session, case: Case, target: Case, *, actor: Principal | None, now: datetime
) -> None:
    """Link ``case`` to ``target`` and note it on the target's history (``actor`` None: the dedup)."""
    case.merged_into_id = target.id
    case.resolution = "duplicate"
    target.duplicate_count += 1
    target.updated_at = now
    session.add(
        CaseEvent(
            case_id=target.id,
            kind="duplicate",
            actor=actor.actor if actor else "system",
            role=actor.role.value if actor else "system",
            from_status=target.status,
            to_status=target.status,
            at=now,
            note=f"case {case.id} merged in",
            data={"case": case.id},
        )
    )


def _dispatch(ctx: _Ctx, case: Case, p: Params) -> None:
    try:
        route = ctx.desk.routing.route(case.rule, case.grid, case.road, p.unit)
    except NoRouteError as exc:
        raise InvalidRequestError(str(exc)) from exc
    case.unit, case.tier, case.street = route.unit, route.tier, route.street or case.street
    case.dispatched_at = ctx.now
    case.deadline_at = ctx.desk.routing.deadline(ctx.now, route.deadline_hours)
    case.on_hold = False
    p.data.update(
        unit=route.unit,
        tier=route.tier,
        street=case.street,
        deadline_hours=route.deadline_hours,
        deadline_at=case.deadline_at.isoformat(),
    )


def _return(ctx: _Ctx, case: Case, p: Params) -> None:
    if not p.note:
        raise InvalidRequestError("return (退回) needs a note saying why the case is not this unit's")
    p.data["unit"] = case.unit
    case.return_count += 1
    case.unit = case.tier = None
    case.deadline_at = case.dispatched_at = None


def _postpone(ctx: _Ctx, case: Case, p: Params) -> None:
    if p.hours is None or p.hours <= 0:
        raise InvalidRequestError("postpone (延期) needs `hours` > 0: working hours added to the deadline")
    start = case.deadline_at if case.deadline_at is not None else ctx.now
    case.deadline_at = ctx.desk.routing.deadline(start, p.hours)
    case.postpone_count += 1
    p.data.update(hours=p.hours, deadline_at=case.deadline_at.isoformat())


def _hold(ctx: _Ctx, case: Case, p: Params) -> None:
    if case.on_hold:
        raise InvalidRequestError(f"case {case.id} is already on hold (挂账)")
    if not p.note:
        raise InvalidRequestError("hold (挂账) needs a note saying why the case cannot be disposed now")
    case.on_hold = True


def _dispose(ctx: _Ctx, case: Case, _p: Params) -> None:
    case.disposed_at = ctx.now
    case.disposed_late = case.deadline_at is not None and ctx.now > case.deadline_at


def _close(ctx: _Ctx, case: Case, p: Params) -> None:
    case.closed_at = ctx.now
    case.resolution = "verified"
    if p.evidence_sha256 is not None:
        case.after_evidence_sha256 = p.evidence_sha256


def _rework(ctx: _Ctx, case: Case, _p: Params) -> None:
    case.rework_count += 1


_EFFECTS: dict[Action, Callable[[_Ctx, Case, Params], None]] = {
    Action.register: _register,
    Action.reject: _reject,
    Action.merge: _merge,
    Action.dispatch: _dispatch,
    Action.return_: _return,
    Action.postpone: _postpone,
    Action.hold: _hold,
    Action.dispose: _dispose,
    Action.close: _close,
    Action.rework: _rework,
}
