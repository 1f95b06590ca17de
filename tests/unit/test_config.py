"""streams.yaml schema, loader and `citywatch config check` (detector/config*.py)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from detector.config import ConfigError, ConfigFileError, load_config, load_config_text, mask_url
from detector.config.check import check, main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "config"
CAM_SECRET = "s3cr3t-cam-pw"
MQTT_SECRET = "s3cr3t-mqtt-pw"


@pytest.fixture
def secrets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITYWATCH_TEST_CAM_PASSWORD", CAM_SECRET)
    monkeypatch.setenv("CITYWATCH_TEST_MQTT_PASSWORD", MQTT_SECRET)
    monkeypatch.delenv("CITYWATCH_TEST_UNSET_CAM3_PASSWORD", raising=False)


def run_check(path: Path) -> tuple[int, list[str]]:
    out = io.StringIO()
    code = check(path, out=out)
    return code, out.getvalue().splitlines()


# (fixture, line, key path, message substring)
# fmt: off
BROKEN = [
    ("polygon_too_few_points.yaml", 14, "streams[1].zones[0].polygon = [[0.1, 0.2]]", "at least 3 points"),
    ("polygon_out_of_range.yaml", 11, "streams[0].zones[0].polygon[2] = [1.5, 0.9]", "x = 1.5 is outside"),
    ("polygon_self_intersecting.yaml", 9, "streams[0].zones[0].polygon", "self-intersecting"),
    ("unknown_key.yaml", 5, "streams[0].sample_intervall_s", "did you mean 'sample_interval_s'"),
    ("missing_env_var.yaml", 6, "streams[0].url", "CITYWATCH_TEST_UNSET_CAM3_PASSWORD is not set"),
    ("negative_dwell.yaml", 7, "streams[0].rules.illegal_parking.dwell_s = -30", "greater than or equal"),
    ("duplicate_stream_ids.yaml", 7, "streams[2].id", "'cam-1' is already used by streams[0]"),
    ("overlapping_stream_ids.yaml", 5, "streams[1].id", "differs only in letter case from 'Gate-East'"),
    ("duplicate_zone_ids.yaml", 9, "streams[0].zones[1].id", "zone id 'curb' is already used by zones[0]"),
    ("unknown_rule.yaml", 10, "streams[0].zones[0].rules[1]", "unknown rule 'ilegal_vending'"),
    ("bad_active_hours.yaml", 5, "defaults.rules.street_vending.active_hours", "25:00-07:00"),
    ("bad_url_scheme.yaml", 4, "streams[0].url", "unsupported URL scheme 'rtmp://'"),
    ("yaml_syntax_error.yaml", 8, "", "YAML syntax error"),
    ("naive_start_time.yaml", 5, "streams[0].start_time", "timezone"),
    ("duplicate_yaml_key.yaml", 7, "streams[0].sample_interval_s", "appears twice"),
    ("zone_params_unchecked_rule.yaml", 10, "streams[0].zones[0].params.street_vending", "does not check"),
    ("mqtt_bad_port.yaml", 4, "mqtt.port = 70000", "less than or equal to 65535"),
    ("bad_rule_models.yaml", 9, "streams[0].rule_models.street_vendng", "did you mean 'street_vending'"),
]
# fmt: on


@pytest.mark.parametrize(("name", "line", "path", "message"), BROKEN, ids=[row[0][:-5] for row in BROKEN])
@pytest.mark.usefixtures("secrets_env")
def test_broken_file_is_reported_at_its_line(name: str, line: int, path: str, message: str) -> None:
    file = FIXTURES / name
    code, lines = run_check(file)
    assert code == 1
    prefix = f"{file}:{line}:"
    matching = [text for text in lines if text.startswith(prefix) and path in text and message in text]
    assert matching, "\n".join(lines)
    assert all(" (hint: " in text for text in lines[:-1]), "every issue carries a hint"
    assert "problem" in lines[-1]  # the summary line

    with pytest.raises(ConfigError) as caught:
        load_config(file)
    assert any(issue.line == line and message in issue.format() for issue in caught.value.issues)
    assert all(issue.hint for issue in caught.value.issues)


def test_valid_file_passes_with_a_summary(secrets_env: None) -> None:
    code, lines = run_check(FIXTURES / "valid.yaml")
    assert code == 0
    assert lines == [
        f"{FIXTURES / 'valid.yaml'}: OK: 3 streams (2 enabled), 4 zones; rules: illegal_parking in 1 zone, "
        "street_vending in 1 zone, illegal_structure in 1 zone, unclean_road in 2 zones"
    ]


def test_missing_and_unreadable_files_exit_2(tmp_path: Path) -> None:
    code, lines = run_check(tmp_path / "nope.yaml")
    assert code == 2
    assert "file not found" in lines[0] and "(hint: " in lines[0]
    assert run_check(tmp_path)[0] == 2  # a directory
    with pytest.raises(ConfigFileError):
        load_config(tmp_path / "nope.yaml")


def test_main_takes_argv(secrets_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(FIXTURES / "valid.yaml")]) == 0
    assert main([str(FIXTURES / "bad_url_scheme.yaml")]) == 1
    assert "rtmp" in capsys.readouterr().out


def test_env_vars_are_expanded_and_secrets_masked(secrets_env: None) -> None:
    config = load_config(FIXTURES / "valid.yaml").config
    stream = config.stream("cam-001")
    assert stream.url == f"rtsp://admin:{CAM_SECRET}@192.0.2.10:554/Streaming/Channels/101"
    assert stream.display_url == "rtsp://admin:***@192.0.2.10:554/Streaming/Channels/101"
    assert stream.display_detect_url == "rtsp://admin:***@192.0.2.10:554/Streaming/Channels/102"
    assert config.mqtt.password is not None
    assert config.mqtt.password.get_secret_value() == MQTT_SECRET
    for text in (repr(config), str(config), repr(stream)):
        assert CAM_SECRET not in text and MQTT_SECRET not in text


def test_secrets_never_reach_the_check_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITYWATCH_TEST_CAM_PASSWORD", CAM_SECRET)
    file = tmp_path / "streams.yaml"
    file.write_text(
        "version: 1\n"
        "mqtt:\n"
        "  password: hunter2-literal\n"  # no username: an issue whose value is a secret
        "streams:\n"
        "  - id: cam-1\n"
        "    url: rtsp://admin:${CITYWATCH_TEST_CAM_PASSWORD}@192.0.2.1:99999/x\n"
        "  - id: cam-2\n"
        "    url: rtsp://admin:plain-pw@192.0.2.2/x\n"
        "    sample_interval_s: 0\n",
        encoding="utf-8",
    )
    code, lines = run_check(file)
    output = "\n".join(lines)
    assert code == 1
    assert f'{file}:3:3: mqtt.password = "***": password given without username' in output
    assert 'streams[0].url = "rtsp://admin:${CITYWATCH_TEST_CAM_PASSWORD}@192.0.2.1:99999/x"' in output
    assert f"{file}:9:5: streams[1].sample_interval_s = 0" in output
    for secret in (CAM_SECRET, "hunter2-literal", "plain-pw"):
        assert secret not in output


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("rtsp://admin:pw@192.0.2.1:554/ch1", "rtsp://admin:***@192.0.2.1:554/ch1"),
        ("rtsps://user:p%40ss@cam.example/ch1?x=1", "rtsps://user:***@cam.example/ch1?x=1"),
        ("rtsp://admin:p@ss@192.0.2.1/x", "rtsp://admin:***@192.0.2.1/x"),
        ("rtsp://admin:pa/ss@192.0.2.1/x", "rtsp://admin:***@192.0.2.1/x"),
        (
            "http://192.0.2.1/snap.jpg?user=a&password=pw&ch=1",
            "http://192.0.2.1/snap.jpg?user=a&password=***&ch=1",
        ),
        ("rtsp://user@192.0.2.1/x", "rtsp://user@192.0.2.1/x"),
        ("http://host:8080/path@v2", "http://host:8080/path@v2"),
        ("rtsp://admin:${CAM_PW}@192.0.2.1/x", "rtsp://admin:${CAM_PW}@192.0.2.1/x"),
        ("datasets/demo/street.mp4", "datasets/demo/street.mp4"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_strict_false_drops_only_the_broken_stream() -> None:
    file = FIXTURES / "one_broken_stream.yaml"
    with pytest.raises(ConfigError):
        load_config(file)
    loaded = load_config(file, strict=False)
    assert [s.id for s in loaded.config.streams] == ["cam-1", "cam-3"]
    assert loaded.skipped_streams == ["cam-2"]
    issues = [(i.line, i.path, i.stream) for i in loaded.issues]
    assert issues == [(13, "streams[1].zones[0].polygon", "cam-2")]


def test_strict_false_keeps_errors_outside_streams_fatal() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(FIXTURES / "mqtt_bad_port.yaml", strict=False)
    assert [i.path for i in caught.value.issues] == ["mqtt.port"]


def test_every_problem_is_reported_in_one_run() -> None:
    text = (
        "version: 1\n"
        "streams:\n"
        "  - id: a\n"
        "    url: rtmp://192.0.2.1/x\n"
        "  - id: b\n"
        "    url: b.mp4\n"
        "    zones: [{id: z, polygon: [[0, 0], [1, 0]], rules: [illegal_parking]}]\n"
        "  - id: a\n"
        "    url: a.mp4\n"
        "    sample_interval_s: -1\n"
        "  - id: c\n"
        "    url: c.mp4\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, file="multi.yaml")
    assert [(i.line, i.path) for i in caught.value.issues] == [
        (4, "streams[0].url"),
        (7, "streams[1].zones[0].polygon"),
        (8, "streams[2].id"),
        (10, "streams[2].sample_interval_s"),
    ]
    loaded = load_config_text(text, file="multi.yaml", strict=False)
    assert [s.id for s in loaded.config.streams] == ["c"]
    assert loaded.skipped_streams == ["a", "b", "a"]


def test_rule_overrides_merge_defaults_stream_then_zone(secrets_env: None) -> None:
    config = load_config(FIXTURES / "valid.yaml").config
    cam = config.stream("cam-001")
    assert config.defaults.rules.illegal_parking.dwell_s == 300
    assert cam.effective_rules.illegal_parking.dwell_s == 180
    assert cam.zone("no-parking-1").effective_rules.illegal_parking.dwell_s == 120
    assert cam.zone("sidewalk").effective_rules.street_vending.active_hours == ["07:00-10:00", "17:00-22:00"]
    assert config.stream("drone-01").effective_rules.illegal_parking.dwell_s == 300
    # the closing point that repeats the first is dropped
    assert cam.zone("sidewalk").polygon == [(0.6, 0.5), (0.95, 0.5), (0.95, 0.95), (0.6, 0.95)]
    start = config.stream("cam-002").start_time
    assert start is not None and start.utcoffset() is not None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty"),
        ("- just\n- a list\n", "not a mapping"),
        ("streams: []\n", "required key is missing"),
        ("version: 1\nmodel: {name: a, path: b.pt}\n", "not both"),
        ("version: 1\nmodel: {imgsz: 300}\n", "multiple of 32"),
        ("version: 1\nmqtt: {ca_file: ca.pem}\n", "tls is false"),
        ("version: 1\nstreams: [{id: x, url: a.mp4, location: {lat: 30}}]\n", "lat and lon go together"),
        ("version: 1\nstreams: [{id: 'bad id', url: a.mp4}]\n", "should match pattern"),
        ("version: 1\nstreams: [{id: x, url: a.mp4, kind: boat}]\n", "'camera' or 'drone'"),
        ("version: 1\nstreams: [{id: x, url: 'rtsp:///x'}]\n", "has no host"),
        ("version: 1\nstreams: [{id: x, url: a.mp4, zones: [{id: z, polygon: [[0,0],[1,0],[0.5,0]], rules: "
         "[unclean_road]}]}]\n", "no area"),
        ("version: 1\nstreams: [{id: x, url: a.mp4, rules: {illegal_parking: {dwel_s: 5}}}]\n", "'dwel_s'"),
        ("version: 1\nstreams: [{id: x, url: a.mp4, rules: {ilegal_parking: {dwell_s: 5}}}]\n", "unknown"),
        ("version: 1\nworker: x\n", "unknown key 'worker'"),
        ("version: 1\nmqtt: {embedded_broker: true}\n", "embedded_broker is gone"),
        ("version: 1\nmqtt: {embedded_broker: false}\n", "never starts a broker"),
        ("version: 1\nstreams: [{id: x, url: '${1BAD}'}]\n", "not a valid environment variable"),
        ("version: 1\nrule_models: {ilegal_parking: {name: x}}\n", "unknown rule 'ilegal_parking'"),
        ("version: 1\nrule_models: {illegal_parking: {name: a, path: b.onnx}}\n", "not both"),
        ("version: 1\nrule_models: {illegal_parking: {imgsz: 300}}\n", "multiple of 32"),
        ("version: 1\nrule_models: {illegal_parking: yolov8n-coco}\n", "mapping"),
        ("version: 1\nmodel: {tune: always}\n", "'auto' or 'off'"),
        ("version: 1\nstreams: [{id: x, url: a.mp4, rule_models: {unclean_road: {colour: red}}}]\n",
         "unknown key 'colour'"),
    ],
)  # fmt: skip
def test_more_problems(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, environ={})
    assert any(message in issue.message for issue in caught.value.issues), caught.value
    assert all(issue.hint for issue in caught.value.issues)


@pytest.mark.parametrize(
    "polygon",
    [
        [[0.1, 0.1], [0.9, 0.1], [0.9, 0.9], [0.1, 0.9]],  # square
        [[0.1, 0.1], [0.9, 0.1], [0.5, 0.5], [0.9, 0.9], [0.1, 0.9]],  # concave
        [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]],  # triangle on the frame border
    ],
)
def test_good_polygons_pass(polygon: list[list[float]]) -> None:
    zone = f"{{id: z, polygon: {polygon}, rules: [unclean_road]}}"
    text = f"version: 1\nstreams: [{{id: x, url: a.mp4, zones: [{zone}]}}]\n"
    config = load_config_text(text, environ={}).config
    assert len(config.streams[0].zones[0].polygon) == len(polygon)


def test_env_expansion_uses_given_environment() -> None:
    text = "version: 1\nmqtt: {host: '${BROKER}', port: '${PORT}'}\n"
    config = load_config_text(text, environ={"BROKER": "broker.internal", "PORT": "8883"}).config
    assert (config.mqtt.host, config.mqtt.port) == ("broker.internal", 8883)


def test_rule_models_parse_globally_and_per_stream() -> None:
    text = (
        "version: 1\n"
        "model: {name: citywatch-synth, tune: off}\n"
        "rule_models:\n"
        "  illegal_parking: {name: yolov8n-coco, conf: 0.4, backend: onnx}\n"
        "streams:\n"
        "  - id: x\n"
        "    url: a.mp4\n"
        "    rule_models: {illegal_parking: {path: models/other.onnx}}\n"
    )
    config = load_config_text(text, environ={}).config
    assert config.model.tune == "off" and load_config_text("version: 1\n").config.model.tune == "auto"
    parking = config.rule_models["illegal_parking"]
    assert (parking.name, parking.conf, parking.backend, parking.batch) == ("yolov8n-coco", 0.4, "onnx", 8)
    assert config.streams[0].rule_models["illegal_parking"].path == Path("models/other.onnx")
    assert load_config_text("version: 1\n").config.rule_models == {}
