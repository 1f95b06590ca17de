"""``citywatch demo``: the whole product on one machine, on the bundled sample streams.

1. an MQTT broker: the configured one if it answers, else the embedded one (pure Python, no
   logins: only on a loopback host such as 127.0.0.1; ``citywatch run`` never starts it);
2. the case API (``python -m api``, its own process, SQLite under var/);
3. the detector on every enabled stream of the config (the root streams.yaml replays the
   bundled scenario clips as live cameras).
It prints where to look, then the cases as they open. Ctrl-C stops everything.
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="citywatch demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", type=Path, default=Path("streams.yaml"))
    p.add_argument("--database-url", default=None, help="API database (default: sqlite:///var/citywatch.db)")
    p.add_argument("--exit-when-done", action="store_true", help="stop once every file stream has finished")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
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
        }
    )
    for configured in ("CITYWATCH_API_KEYS", "CITYWATCH_API_KEYS_FILE", "CITYWATCH_DEV_MODE"):
        env.pop(configured, None)
    if a.database_url or cfg.api.database_url:
        env["CITYWATCH_DATABASE_URL"] = a.database_url or cfg.api.database_url or ""
    host, port = api.hostname or "127.0.0.1", api.port or 8000
    proc = subprocess.Popen(
        [sys.executable, "-m", "api", "--dev", "--host", host, "--port", str(port)], env=env
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
            f"  cases        {cfg.api.url}/cases\n"
            f"  one case     {cfg.api.url}/cases/1   (evidence: /cases/1/evidence)\n"
            f"  API docs     {cfg.api.url}/docs\n"
            f"  health       {cfg.api.url}/health\n"
            "  case desk    dev-mode keys (api/AUTH.md), e.g. -H 'X-API-Key: citywatch-dev-reviewer-key'\n"
            f"  MQTT         mosquitto_sub -h {cfg.mqtt.host} -p {cfg.mqtt.port} -t 'citywatch/v1/#' -v\n"
            f"  streams      {', '.join(w.stream.id for w in det.workers)} (clips play in real time; "
            "cases open after each rule's dwell)\n  Ctrl-C stops everything.\n"
        )
        seen: set[int] = set()
        while not stop:
            time.sleep(2.0)
            try:
                cases = _get(f"{cfg.api.url}/cases?page_size=100")["data"]
            except (urllib.error.URLError, OSError, ValueError, KeyError):
                continue
            for c in cases:
                if c["id"] not in seen:
                    seen.add(c["id"])
                    print(
                        f"  case {c['id']}: {c['rule']} on {c['stream']} zone {c['zone']} "
                        f"(first seen {c['first_seen']}) -> {cfg.api.url}/cases/{c['id']}/evidence"
                    )
            if a.exit_when_done and det.all_finished():
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
