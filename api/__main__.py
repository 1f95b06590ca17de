"""``python -m api [--host 127.0.0.1] [--port 8000] [--dev]``: run the case API with uvicorn.
``python -m api retention [--dry-run]``: one retention pass (api/services/retention.py).

The API does not start without credentials: set ``CITYWATCH_API_KEYS`` or
``CITYWATCH_API_KEYS_FILE`` (api/AUTH.md), or ask for dev mode (``--dev`` or
``CITYWATCH_DEV_MODE=true``: the documented dev keys), which listens on loopback only.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
from dataclasses import asdict
from typing import Any

import uvicorn
from pydantic import ValidationError
from uvicorn.config import LOGGING_CONFIG

from api.core.config import Settings, describe
from api.core.ingress import is_loopback
from api.core.logs import ACCESS_LOGS, FORMATS, ErrorsOnly, log_format, setup_logging
from api.errors import ConfigError
from api.services.auth import Authenticator


def _env_format_ok() -> bool:
    try:
        log_format(None)
    except ValueError:
        return False
    return True


def uvicorn_logging(fmt: str, access: str) -> tuple[dict[str, Any] | None, bool]:
    """``(log_config, access_log)`` for ``uvicorn.run``: text keeps uvicorn's own look; json leaves
    uvicorn's loggers to the root handler (``setup_logging``). ``access``: all, errors (status
    >= 400 only) or off."""
    if fmt == "json":
        if access == "errors":
            logging.getLogger("uvicorn.access").addFilter(ErrorsOnly())
        return None, access != "off"
    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    if access == "errors":
        config["filters"] = {"errors_only": {"()": "api.core.logs.ErrorsOnly"}}
        config["handlers"]["access"]["filters"] = ["errors_only"]
    return config, access != "off"


def check_startup(settings: Settings, host: str) -> None:
    """Raise ``ConfigError`` when the API must not start: no keys and no dev mode, a broken key
    configuration, or dev mode on an address beyond loopback."""
    Authenticator.from_settings(settings)
    if settings.dev_mode and not is_loopback(host):
        raise ConfigError(
            f"dev mode listens on loopback only, and --host {host} is not a loopback address: use "
            "--host 127.0.0.1 (or ::1), or configure keys (CITYWATCH_API_KEYS or CITYWATCH_API_KEYS_FILE) "
            "and unset CITYWATCH_DEV_MODE to listen beyond this machine"
        )


def _settings(dev: bool = False) -> Settings:
    settings = Settings()
    return settings.model_copy(update={"dev_mode": True}) if dev else settings


def serve(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m api", description="citywatch case API")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument(
        "--dev",
        action="store_true",
        help="dev mode: the documented dev keys of api/AUTH.md, loopback only (= CITYWATCH_DEV_MODE=true)",
    )
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default=None,
        help="text (default) or json lines (= $CITYWATCH_LOG_FORMAT)",
    )
    parser.add_argument(
        "--access-log", choices=ACCESS_LOGS, default="all",
        help="a line per request: all (default), errors (status >= 400 only) or off",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        fmt = log_format(args.log_format)
    except ValueError as exc:
        print(f"python -m api: not starting: {exc}", file=sys.stderr)
        return 2
    setup_logging(args.log_level, fmt)
    try:
        settings = _settings(args.dev)
        check_startup(settings, args.host)
    except ConfigError as exc:
        print(f"python -m api: not starting: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        print(
            f"python -m api: not starting: the CITYWATCH_* settings are invalid: {describe(exc)}",
            file=sys.stderr,
        )
        return 2
    from api.main import create_app

    log_config, access_log = uvicorn_logging(fmt, args.access_log)
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        log_config=log_config,
        access_log=access_log,
    )
    return 0


def retention(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m api retention",
        description="delete photos of cases that ended CITYWATCH_RETENTION_PHOTO_DAYS ago (unless a live "
        "case uses them), dead letters older than CITYWATCH_RETENTION_DEAD_LETTER_DAYS, and images of "
        "ended cases while the evidence store is over CITYWATCH_EVIDENCE_BUDGET_MB (never an open case's)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="count (and list, for the budget) what goes, delete nothing",
    )
    args = parser.parse_args(argv)
    setup_logging("INFO", None if _env_format_ok() else "text")  # a bad CITYWATCH_LOG_FORMAT: text
    from api.core.db import create_db_engine, create_session_factory
    from api.core.evidence import EvidenceStore
    from api.core.migrate import run_migrations
    from api.models import utcnow
    from api.services.retention import run_retention

    try:
        settings = Settings()
        engine = create_db_engine(settings.database_url)
    except ConfigError as exc:
        print(f"python -m api retention: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        print(
            f"python -m api retention: the CITYWATCH_* settings are invalid: {describe(exc)}", file=sys.stderr
        )
        return 2
    try:
        run_migrations(engine)
        store = EvidenceStore(settings.evidence_dir)
        report = run_retention(
            create_session_factory(engine), store, settings, utcnow(), dry_run=args.dry_run
        )
    finally:
        engine.dispose()
    for item in report.pruned:  # the budget pass (CITYWATCH_EVIDENCE_BUDGET_MB), one line an image
        what = "main evidence" if item.main else "secondary image"
        cases = ", ".join(map(str, item.case_ids)) or "none"
        verb = "would delete" if args.dry_run else "deleted"
        print(f"{verb} {item.sha256} ({item.size} bytes, {what} of ended cases {cases})")
    figures = {k: v for k, v in asdict(report).items() if k != "pruned"}
    print(json.dumps({"dry_run": args.dry_run, **figures}))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "retention":
        return retention(args[1:])
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
