"""Cases from a survey: one v1 violation event (``opened``) per new object, through the normal outbox.

The event's ``violation_id`` is derived from the stream, the class, the position (rounded to about a
metre) and the first sighting, so publishing the same survey again never makes a second case.
Events go through :class:`~detector.delivery.publisher.Publisher`: stored in the outbox first and deleted on
PUBACK; whatever the broker has not acknowledged within ``flush_s`` stays in the outbox and is sent by
the next ``--publish`` run with the same outbox.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from detector.contracts.events import build_event, violation_id
from detector.delivery.mqtt import MqttSettings
from detector.evidence import Evidence
from detector.survey.errors import SurveyPublishError

log = logging.getLogger(__name__)
RULE_FOR_LABEL = {
    "structure": "illegal_structure",
    "litter": "unclean_road",
    "vendor": "street_vending",
    "vehicle": "illegal_parking",
}


@dataclass(frozen=True)
class CaseSettings:
    stream: str = "drone-survey"
    zone: str = "survey"
    classes: tuple[str, ...] = ("structure",)  # model classes that open cases when new
    rule_labels: tuple[tuple[str, str], ...] = (
        ("vehicle", "vehicle"),
        ("stall", "vendor"),
        ("litter", "litter"),
        ("structure", "structure"),
    )


def case_events(
    features: Sequence[Mapping[str, Any]],
    out_dir: Path,
    frame_sizes: Mapping[int, tuple[int, int]],
    model: Mapping[str, Any],
    cs: CaseSettings,
) -> list[dict[str, Any]]:
    """Validated ``opened`` events for the new objects of the case classes, in feature order."""
    labels = dict(cs.rule_labels)
    events: list[dict[str, Any]] = []
    for f in features:
        p = f["properties"]
        if p["status"] != "new" or p["class"] not in cs.classes:
            continue
        label = labels.get(p["class"])
        if label not in RULE_FOR_LABEL:
            log.warning("class %s has no rule label; no case for %s", p["class"], p["id"])
            continue
        jpeg = (out_dir / p["evidence"]).read_bytes()
        img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise SurveyPublishError(
                f"evidence {p['evidence']} of {p['id']} is not a readable JPEG; rerun the survey"
            )
        w, h = frame_sizes[int(p["best_frame"])]
        x1, y1, x2, y2 = p["best_box"]
        lon, lat = f["geometry"]["coordinates"]
        key = ("survey", p["class"], f"{lat:.5f}", f"{lon:.5f}")
        ev = Evidence(jpeg, hashlib.sha256(jpeg).hexdigest(), img.shape[1], img.shape[0], p["first_seen_ts"])
        events.append(
            build_event(
                "opened",
                violation_id=violation_id(cs.stream, key, p["first_seen_ts"]),
                seq=0,
                rule=RULE_FOR_LABEL[label],
                label=label,
                stream=cs.stream,
                zone=cs.zone[:64],
                bbox_norm=[max(0.0, x1 / w), max(0.0, y1 / h), min(1.0, x2 / w), min(1.0, y2 / h)],
                score_median=p["confidence_median"],
                score_top=p["confidence"],
                first_seen=p["first_seen_ts"],
                last_seen=p["last_seen_ts"],
                evidence=ev,
                model=model,
                location={"lat": lat, "lon": lon, "address": None, "grid": None, "road": None},
            )
        )
    return events


def publish_events(
    events: Sequence[Mapping[str, Any]], settings: MqttSettings, outbox_path: Path, flush_s: float = 30.0
) -> dict[str, int]:
    """Put every event in the outbox and wait up to ``flush_s`` for the broker's acknowledgements."""
    from detector.delivery.broker import broker_answers
    from detector.delivery.mqtt import MqttError, PahoCommunicator
    from detector.delivery.outbox import Outbox, OutboxError
    from detector.delivery.publisher import Publisher

    if not broker_answers(settings.host, settings.port):
        raise SurveyPublishError(
            f"no MQTT broker answers at {settings.host}:{settings.port}: start it (or `citywatch demo`), or "
            "give --mqtt HOST:PORT / --config FILE; the survey's outputs are written: "
            "rerun with --resume --publish"
        )
    try:
        outbox = Outbox(outbox_path)
        comm = PahoCommunicator(settings).start()
    except (OutboxError, MqttError) as exc:
        raise SurveyPublishError(f"cannot start publishing: {exc}") from exc
    pub = Publisher(comm, outbox, topic_prefix=settings.topic_prefix)
    try:
        for e in events:
            pub.publish_event(e)
        delivered = pub.flush(flush_s)
        stats = pub.stats()
    finally:
        pub.stop()
        comm.stop()
        outbox.close()
    if not delivered:
        log.warning(
            "%d case event(s) not yet acknowledged; they stay in %s for the next run",
            stats["pending"],
            outbox_path,
        )
    return {"published": len(events), "pending": stats["pending"], "acked": stats["acked"]}
