"""``citywatch demo``: the whole product on one machine, on the bundled sample streams.

1. an MQTT broker: the configured one if it answers, else the embedded one (pure Python, no
   logins: only on a loopback host such as 127.0.0.1; ``citywatch run`` never starts it);
2. the case API (``python -m api``, its own process, SQLite under var/);
3. the detector on every enabled stream of the config (the root streams.yaml replays the
   bundled scenario clips as live cameras).
It prints where to look, then what a person wants to see: streams going live, cases opening and
clearing (the services log warnings only, and the API no line per request of the demo's own
polling; ``--verbose`` for everything). Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlparse

from detector.commands.run import Detector, RunError, load
from detector.contracts.logs import FORMATS, setup_logging
from detector.delivery.broker import BrokerError, EmbeddedBroker, broker_answers

log = logging.getLogger("citywatch.demo")


def _get(url: str, timeout: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def wait_api(url: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RunError(f"the API exited with code {proc.returncode}; see the log above")
        try:
            _get(f"{url}/health")
            return
        except (urllib.error.URLError, OSError, ValueError):
            time.sleep(0.5)
    raise RunError(f"the API did not answer at {url}/health within {timeout:.0f} s")


class Reporter:
    """The demo's own lines: a stream's state when it changes, a case when it opens and clears."""

    def __init__(self, api_url: str) -> None:
        self.api_url = api_url
        self.states: dict[str, str] = {}
        self.cases: dict[int, bool] = {}  # id -> cleared

    def streams(self, det: Detector) -> None:
        for w in det.workers:
            sid, st = w.stream.id, w.state
            if self.states.get(sid) != st.state and st.state != "connecting":
                self.states[sid] = st.state
                why = f" ({st.last_error})" if st.state in ("stalled", "failed") and st.last_error else ""
                print(f"  stream {sid} {st.state}{why}", flush=True)

    def poll_cases(self) -> None:
        try:
            cases = _get(f"{self.api_url}/cases?page_size=100")["data"]
        except (urllib.error.URLError, OSError, ValueError, KeyError):
            return
        for c in sorted(cases, key=lambda c: c["id"]):
            cid, cleared = c["id"], c.get("cleared_at") is not None
            if cid not in self.cases:
                print(
                    f"  case {cid} opened: {c['rule']} on {c['stream']} zone {c['zone']} "
                    f"-> {self.api_url}/cases/{cid}/evidence",
                    flush=True,
                )
            if cleared and not self.cases.get(cid, False):
                print(f"  case {cid} cleared: {c['rule']} on {c['stream']} zone {c['zone']}", flush=True)
            self.cases[cid] = cleared


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="citywatch demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", type=Path, default=Path("streams.yaml"))
    p.add_argument("--database-url", default=None, help="API database (default: sqlite:///var/citywatch.db)")
    p.add_argument("--exit-when-done", action="store_true", help="stop once every file stream has finished")
    p.add_argument("--verbose", action="store_true", help="the services' info logs and every API request too")
    p.add_argument(
        "--log-format", choices=FORMATS, default=None, help="text or json lines (= $CITYWATCH_LOG_FORMAT)"
    )
    a = p.parse_args(argv)
    try:
        fmt = setup_logging("INFO" if a.verbose else "WARNING", a.log_format)
    except ValueError as err:
        print(f"citywatch demo: {err}", file=sys.stderr)
        return 2
    try:
        loaded = load(a.config)
    except RunError as err:
        print(f"citywatch demo: {err}", file=sys.stderr)
        return 2
    cfg = loaded.config
    broker: EmbeddedBroker | None = None
    if not broker_answers(cfg.mqtt.host, cfg.mqtt.port):
        try:
            broker = EmbeddedBroker(cfg.mqtt.host, cfg.mqtt.port).start()
        except BrokerError as err:
            print(
                f"citywatch demo: no MQTT broker answers at {cfg.mqtt.host}:{cfg.mqtt.port}; {err}",
                file=sys.stderr,
            )
            return 2
        print(f"started the embedded MQTT broker (demo only, no logins) on {cfg.mqtt.host}:{cfg.mqtt.port}")
    else:
        print(f"using the MQTT broker at {cfg.mqtt.host}:{cfg.mqtt.port}")
    api = urlparse(cfg.api.url)
    env = dict(os.environ)
    env.update(
        {
            "CITYWATCH_MQTT_HOST": cfg.mqtt.host,
            "CITYWATCH_MQTT_PORT": str(cfg.mqtt.port),
            "CITYWATCH_MQTT_TOPIC_PREFIX": cfg.mqtt.topic_prefix,
            # the demo asks for dev mode (documented keys, loopback only) and lets /cases be read
            # without a key, so the links below open in a browser
            "CITYWATCH_ANONYMOUS_READ": "true",
            # the console's zone editor saves into the file this detector runs (and reloads live)
            "CITYWATCH_STREAMS_FILE": str(Path(loaded.path).resolve()),
        }
    )
    for configured in ("CITYWATCH_API_KEYS", "CITYWATCH_API_KEYS_FILE", "CITYWATCH_DEV_MODE"):
        env.pop(configured, None)
    if a.database_url or cfg.api.database_url:
        env["CITYWATCH_DATABASE_URL"] = a.database_url or cfg.api.database_url or ""
    host, port = api.hostname or "127.0.0.1", api.port or 8000
    proc = subprocess.Popen(
        [sys.executable, "-m", "api", "--dev", "--host", host, "--port", str(port), "--log-format", fmt]
        + ([] if a.verbose else ["--log-level", "warning", "--access-log", "errors"]),
        env=env,
    )
    det: Detector | None = None
    stop = False

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        wait_api(cfg.api.url, proc)
        det = Detector(loaded).start()
        print(
            "\ncitywatch demo is running:\n"
            f"  console      {cfg.api.url}/console/   (sign in with a dev key below)\n"
            f"  cases        {cfg.api.url}/cases\n"
            f"  one case     {cfg.api.url}/cases/1   (evidence: /cases/1/evidence)\n"
            f"  API docs     {cfg.api.url}/docs\n"
            f"  health       {cfg.api.url}/health\n"
            "  case desk    dev-mode keys (api/AUTH.md), e.g. -H 'X-API-Key: citywatch-dev-reviewer-key'\n"
            f"  MQTT         mosquitto_sub -h {cfg.mqtt.host} -p {cfg.mqtt.port} -t 'citywatch/v1/#' -v\n"
            f"  streams      {', '.join(w.stream.id for w in det.workers)} (clips play in real time; "
            "cases open after each rule's dwell)\n  Ctrl-C stops everything.\n"
        )
        report = Reporter(cfg.api.url)
        while not stop:
            report.streams(det)
            time.sleep(1.0)
            report.poll_cases()
            if a.exit_when_done and det.all_finished():
                report.streams(det)
                report.poll_cases()
                break
    except RunError as err:
        print(f"citywatch demo: {err}", file=sys.stderr)
        return 2
    finally:
        if det is not None:
            det.stop()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        if broker is not None:
            broker.stop()
    return 0
