"""``citywatch run --ray``: the fleet driver's life in the ``citywatch run`` process (start, loop, stop)."""

from __future__ import annotations

import argparse
import logging
import sys
import threading

from detector.config import LoadedConfig
from detector.delivery.broker import broker_answers
from detector.fleet.driver import FleetDriver, FleetError

log = logging.getLogger("citywatch.fleet")


def run_fleet(
    loaded: LoadedConfig, a: argparse.Namespace, stops: list[threading.Event], signalled: list[int]
) -> int:
    """Run until a signal (or, with ``--exit-when-done``, until every file stream finished); 2 when the
    fleet cannot start (the reason on stderr)."""
    cfg = loaded.config
    if not broker_answers(cfg.mqtt.host, cfg.mqtt.port):
        print(
            f"citywatch run: no MQTT broker answers at {cfg.mqtt.host}:{cfg.mqtt.port}: start it, or pass "
            "--wait-for-broker S",
            file=sys.stderr,
        )
        return 2
    driver = FleetDriver(loaded, a.ray, threads=a.threads, log_level=a.log_level, log_format=a.log_format)
    stops.append(driver.stop_event)
    try:
        driver.start()
    except FleetError as err:
        print(f"citywatch run: {err}", file=sys.stderr)
        return 2
    if signalled:
        driver.stop_event.set()
    log.info(
        "fleet: %d streams over %d nodes: %s", len(driver.streams), len(driver.nodes),
        ", ".join(f"{nid[:8]}={len(s.streams)}" for nid, s in driver.nodes.items()),
    )  # fmt: skip
    try:
        driver.run(exit_when_done=a.exit_when_done)
    finally:
        driver.stop(within_s=a.stop_within if signalled else None)
        log.info("fleet of %s stopped (%d stream moves)", cfg.worker_id, driver.moves)
    return 0
