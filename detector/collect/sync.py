"""``citywatch collect sync``: the desk's verdicts (``GET /reviews`` of the case API) into the sidecars.

Each review names the ``violation_id`` of its case; every collected frame kept for that case (a case
frame, ``violation_id`` in its sidecar) gets ``review`` (verdict, case id, reason, the desk's corrected
label and box, who and when) and the verdict among its ``reasons``, which pins it (kept over the budget
until ``collect.reviewed_max_age_days``). A case judged again comes again and replaces the review.
Reviews of cases with no frame here (opened before collecting was on, on a ``collect: false`` stream,
deleted by age) are counted and reported. The cursor (``next_since``) is kept in
``<dir>/.sync-state.json`` with the API it belongs to, so the next run goes on where this one stopped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from detector.collect.record import (
    CollectError,
    Review,
    read_record,
    sidecars,
    write_atomic,
    write_record,
)

STATE_FILE = ".sync-state.json"
PAGE = 100
MAX_PAGES = 100_000


class SyncError(CollectError):
    """The reviews cannot be fetched; the message says why and what to do."""


@dataclass
class SyncReport:
    pages: int = 0
    reviews: int = 0
    frames_updated: int = 0
    frames_unchanged: int = 0
    not_collected: list[str] = field(default_factory=list)  # violation ids without a frame here
    next_since: str | None = None

    def summary(self) -> str:
        missing = len(self.not_collected)
        shown = ", ".join(self.not_collected[:5]) + (" ..." if missing > 5 else "")
        tail = f" ({shown})" if missing else ""
        return (
            f"{self.reviews} reviews in {self.pages} pages: {self.frames_updated} frames updated, "
            f"{self.frames_unchanged} already up to date; {missing} reviews of cases with no frame in the "
            f"collection{tail}; next since {self.next_since or '-'}"
        )


def review_of(item: Mapping[str, Any], width: int, height: int) -> Review:
    """The sidecar's ``review`` from one ``GET /reviews`` item: the desk's box (pixels of the evidence
    frame, which is the stored frame's size) clipped to the frame, and the case's own label and box
    (normalised by the API) in the frame's pixels."""
    return Review(
        verdict=item["verdict"],
        case_id=int(item["case_id"]),
        reason=item.get("reason"),
        label=item.get("corrected_label"),
        xyxy=_pixels(item.get("corrected_bbox"), 1.0, 1.0, width, height),
        by=item.get("reviewed_by"),
        at=item.get("reviewed_at"),
        case_label=item.get("label"),
        case_xyxy=_pixels(item.get("bbox"), width, height, width, height),  # the API's is normalised
    )


def _pixels(
    box: Any, sx: float, sy: float, width: int, height: int
) -> tuple[float, float, float, float] | None:
    """``box`` scaled by (sx, sy) and clipped to the frame; None when there is none."""
    if not isinstance(box, list | tuple) or len(box) != 4:
        return None
    x1, y1, x2, y2 = (float(v) for v in box)
    return (
        _clip(round(x1 * sx, 1), width),
        _clip(round(y1 * sy, 1), height),
        _clip(round(x2 * sx, 1), width),
        _clip(round(y2 * sy, 1), height),
    )


def index_by_violation(root: Path) -> dict[str, list[Path]]:
    """violation_id -> the sidecars of its case frames."""
    out: dict[str, list[Path]] = {}
    for path in sidecars(root):
        try:
            record = read_record(path)
        except CollectError:
            continue
        if record.violation_id:
            out.setdefault(record.violation_id, []).append(path)
    return out


def apply_reviews(
    items: Iterable[Mapping[str, Any]], index: Mapping[str, list[Path]], report: SyncReport
) -> None:
    """Write each review into the sidecars of its case frames."""
    for item in items:
        report.reviews += 1
        vid = str(item.get("violation_id") or "")
        paths = index.get(vid, [])
        if not paths:
            report.not_collected.append(vid)
            continue
        for path in paths:
            record = read_record(path)
            updated = record.with_review(review_of(item, record.width, record.height))
            if updated == record:
                report.frames_unchanged += 1
                continue
            write_record(path, updated)
            report.frames_updated += 1


def load_state(root: Path, api: str) -> str | None:
    """The saved cursor, if it belongs to ``api``."""
    try:
        state = json.loads((root / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or state.get("api") != api:
        return None
    since = state.get("next_since")
    return since if isinstance(since, str) else None


def save_state(root: Path, api: str, next_since: str | None) -> None:
    state = {"api": api, "next_since": next_since, "synced_at": datetime.now(UTC).isoformat()}
    write_atomic(root / STATE_FILE, (json.dumps(state, indent=1) + "\n").encode("utf-8"))


def fetch_page(client: httpx.Client, since: str | None, limit: int) -> dict[str, Any]:
    params: dict[str, Any] = {"limit": limit}
    if since is not None:
        params["since"] = since
    try:
        response = client.get("/reviews", params=params)
    except httpx.HTTPError as err:
        raise SyncError(f"cannot reach the case API at {client.base_url}: {err}") from err
    if response.status_code in (401, 403):
        raise SyncError(
            f"the case API refused the key ({response.status_code}: {_detail(response)}): give a key of a "
            "reviewer, dispatcher or admin with --key or CITYWATCH_API_KEY (api/AUTH.md)"
        )
    if response.status_code == 404:
        raise SyncError(f"{client.base_url} has no GET /reviews: is it a case API of this version?")
    if response.status_code != 200:
        raise SyncError(f"GET /reviews answered {response.status_code}: {_detail(response)}")
    try:
        body = response.json()
    except ValueError as err:
        raise SyncError(f"GET /reviews did not answer JSON: {err}") from err
    if not isinstance(body, dict) or not isinstance(body.get("items"), list):
        raise SyncError("GET /reviews answered JSON without an items list")
    return body


def sync(client: httpx.Client, root: Path, since: str | None, api: str, limit: int = PAGE) -> SyncReport:
    """Page through ``GET /reviews`` from ``since`` until the cursor stops moving; save it after each page."""
    if not root.is_dir():
        raise SyncError(f"{root} is no collection folder (collect.dir of streams.yaml; --dir)")
    index = index_by_violation(root)
    report = SyncReport(next_since=since)
    for _ in range(MAX_PAGES):
        body = fetch_page(client, since, limit)
        report.pages += 1
        apply_reviews(body["items"], index, report)
        next_since = body.get("next_since")
        if isinstance(next_since, str):
            report.next_since = next_since
            save_state(root, api, next_since)
        if next_since is None or next_since == since:
            break
        since = next_since
    return report


def _clip(value: float, most: float) -> float:
    return min(max(value, 0.0), float(most))


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])[:200]
    return str(body)[:200]


def parse_since(text: str) -> str:
    """``--since``: an ISO 8601 time (a ``next_since`` cursor passes as it is)."""
    if "~" in text:
        return text
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise SyncError(f"--since {text!r} is not an ISO 8601 time such as 2026-06-01T00:00:00Z") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).isoformat()
