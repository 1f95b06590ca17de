"""``POST /recheck-results/{stream}``: a detector answers a camera re-check over HTTP (the same
payload and handling as the MQTT topic ``<prefix>/recheck-results/{stream}``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from api.deps import CurrentUser, DeskDep, SessionDep
from api.errors import ForbiddenError
from api.ingest.service import IngestOutcome
from api.routes.common import AUTH_ERRORS, BODY_ERRORS
from api.schemas import RecheckAnswerPublic
from api.services.auth import Role
from api.services.recheck_answers import handle_result
from detector.contracts.recheck import answer_topic

router = APIRouter(tags=["recheck"], responses={**AUTH_ERRORS, **BODY_ERRORS})
Stream = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


@router.post(
    "/recheck-results/{stream}",
    response_model=RecheckAnswerPublic,
    responses={400: {"model": RecheckAnswerPublic, "description": "refused (dead-lettered) with the reason"}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": (
                "citywatch.recheck-result/1, the MQTT answer's payload (detector/contracts/RECHECK.md)"
            ),
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
)
async def post_recheck_result(
    request: Request, session: SessionDep, desk: DeskDep, user: CurrentUser, stream: Stream
) -> Any:
    """The same bytes as on MQTT; anything that is not a valid answer is dead-lettered (400)."""
    if user.role not in (Role.detector, Role.admin):
        raise ForbiddenError("only the detector service account (or an admin) answers re-checks")
    topic = answer_topic(desk.settings.mqtt_topic_prefix, stream)
    payload = await request.body()
    result = await run_in_threadpool(handle_result, session, desk, topic, payload)
    answer = RecheckAnswerPublic(outcome=result.outcome.value, case_id=result.case_id, reason=result.reason)
    if result.outcome is IngestOutcome.dead_letter:
        return JSONResponse(answer.model_dump(), status_code=400)
    return answer
