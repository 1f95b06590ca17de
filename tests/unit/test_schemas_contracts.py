"""The v1 MQTT contracts: every topic has a JSON Schema, kept once (detector/contracts/, which the API
validates with too), the contracts README documents each one, and what the detector publishes
satisfies them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from detector.config.schema import StreamConfig
from detector.contracts.events import EventSchemaError, validate_state, validate_status
from detector.contracts.schemas import SCHEMA_FILES, STATE_SCHEMA_FILE, STATUS_SCHEMA_FILE
from detector.delivery.publisher import Publisher
from detector.sources.worker import StreamState

REPO = Path(__file__).resolve().parents[2]
DETECTOR_CONTRACTS = REPO / "detector" / "contracts"
TOPIC_SCHEMAS = ["violation-event.v1.schema.json", STATUS_SCHEMA_FILE, STATE_SCHEMA_FILE]


def all_schemas() -> list[Path]:
    return sorted(DETECTOR_CONTRACTS.glob("*.schema.json"))


def test_every_topic_of_the_design_has_a_schema() -> None:
    names = {p.name for p in DETECTOR_CONTRACTS.glob("*.schema.json")}
    assert set(TOPIC_SCHEMAS) <= names


def test_each_schema_exists_once() -> None:
    """The API validates with detector/contracts' files (detector.contracts.schemas), never a copy."""
    files = subprocess.run(["git", "ls-files", "*.schema.json"], cwd=REPO, capture_output=True, text=True)
    listed = [Path(p) for p in files.stdout.split()]
    assert listed, files.stderr
    assert {p.parent for p in listed} == {Path("detector/contracts")}, listed
    assert {p.name for p in listed} == set(SCHEMA_FILES)


@pytest.mark.parametrize("path", all_schemas(), ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_schema_is_valid_draft_2020_12_with_an_id_and_a_version(path: Path) -> None:
    schema = json.loads(path.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert ".v1." in path.name and path.name.split(".v1.")[0] in schema["$id"]
    assert schema.get("title") and schema.get("description")


@pytest.mark.parametrize("name", TOPIC_SCHEMAS)
def test_contracts_readme_documents_each_schema(name: str) -> None:
    readme = (DETECTOR_CONTRACTS / "README.md").read_text(encoding="utf-8")
    assert name in readme


# ---------------------------------------------------------------------------------------- status
@pytest.mark.parametrize("payload", [b"online", b"offline", "online"])
def test_status_payloads_are_valid(payload: bytes | str) -> None:
    validate_status(payload)


@pytest.mark.parametrize("payload", [b"ONLINE", b'"online"', b"", b"\xff\xfe", b"up"])
def test_bad_status_payloads_are_refused(payload: bytes) -> None:
    with pytest.raises(EventSchemaError, match="status invalid"):
        validate_status(payload)


# ---------------------------------------------------------------------------------------- state
def stream(url: str = "rtsp://user:secret@10.0.0.5/cam") -> StreamConfig:
    return StreamConfig.model_validate({"id": "cam-001", "url": url})


@pytest.mark.parametrize("name", ["connecting", "live", "stalled", "failed", "finished", "stopped"])
def test_worker_state_satisfies_the_contract(name: Any) -> None:
    state = StreamState(state=name, last_error="boom" if name == "failed" else None)
    payload = state.as_dict(stream())
    validate_state(payload)
    assert "secret" not in payload["url"]


def test_worker_state_with_frames_satisfies_the_contract() -> None:
    state = StreamState(
        state="live", last_frame_ts=1767254420.5, samples=12, decode_mode="keyframes", fps=0.5
    )
    validate_state(state.as_dict(stream()))


def test_schema_describes_every_key_the_detector_publishes() -> None:
    """A key added to the worker's state (or the inference figures) goes into the schema too."""
    schema = json.loads((DETECTOR_CONTRACTS / STATE_SCHEMA_FILE).read_text(encoding="utf-8"))
    published = set(StreamState().as_dict(stream())) | {"lag_s", "inference_dropped"}
    assert published - set(schema["properties"]) == set()
    assert set(schema["required"]) <= published


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"state": "running"}, "$.state"),
        ({"samples": -1}, "$.samples"),
        ({"connected": "yes"}, "$.connected"),
        ({"stream": "cam/1"}, "$.stream"),
        ({"sample_fps": None}, "$.sample_fps"),
    ],
)
def test_bad_states_are_refused_with_the_path(change: dict[str, Any], path: str) -> None:
    payload = {**StreamState().as_dict(stream()), **change}
    with pytest.raises(EventSchemaError) as err:
        validate_state(payload)
    assert err.value.path == path and "stream state invalid" in str(err.value)


def test_missing_key_is_refused() -> None:
    payload = StreamState().as_dict(stream())
    del payload["last_frame_ts"]
    with pytest.raises(EventSchemaError, match="last_frame_ts"):
        validate_state(payload)


class _NoBroker:
    """Stands in for the communicator: the publisher's sender thread is not started."""

    def is_connected(self) -> bool:
        return True


def test_publisher_keeps_a_bad_state_off_the_wire(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from detector.delivery.outbox import Outbox

    with Outbox(tmp_path / "outbox.db") as outbox:
        publisher = Publisher(_NoBroker(), outbox, start=False)  # type: ignore[arg-type]
        publisher.publish_state("cam-001", {**StreamState().as_dict(stream()), "state": "running"})
        publisher.publish_state("cam-002", StreamState().as_dict(stream()))
        assert list(publisher._states) == ["citywatch/v1/streams/cam-002/state"]
    assert "cam-001: state not published" in caplog.text
