"""``GET /metrics``: the API's Prometheus metrics (api/services/metrics.py), in the text format.

Without a credential only from loopback (a Prometheus on the same host); from anywhere else a staff
credential (admin, reviewer, dispatcher, field unit). A reverse proxy on the same host must send
``X-Forwarded-For`` (uvicorn then sees the real client) or keep ``/metrics`` to itself: api/AUTH.md."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.core.ingress import is_loopback
from api.deps import OptionalPrincipal
from api.errors import AuthenticationError, ForbiddenError
from api.routes.common import AUTH_ERRORS
from api.services.auth import STAFF_READERS
from api.services.metrics import ApiMetrics

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}, **AUTH_ERRORS},
)
def metrics(request: Request, principal: OptionalPrincipal) -> Response:
    if principal is None:
        if request.client is None or not is_loopback(request.client.host):
            raise AuthenticationError(
                "the metrics need a staff credential (an X-API-Key header or a bearer token) from an "
                "address that is not loopback"
            )
    elif principal.role not in STAFF_READERS:
        raise ForbiddenError(f"role {principal.role.value!r} may not read the metrics")
    app_metrics: ApiMetrics = request.app.state.metrics
    return Response(generate_latest(app_metrics.registry), media_type=CONTENT_TYPE_LATEST)
