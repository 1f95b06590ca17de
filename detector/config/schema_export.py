"""``python -m detector.config.schema_export [--check]``: the streams.yaml schema as JSON Schema.

Writes ``detector/contracts/streams.v1.schema.json`` from the pydantic models of
``detector.config.schema``: the contract the case API judges an edited ``zones:`` list by
(``detector.contracts.zones.check_zones``), as it may not import ``detector.config``. Run it after
changing the schema; ``tests/unit/test_contracts_zones.py`` fails while the committed file is stale.
``--check`` writes nothing and exits 1 when the file is not current.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from detector.config.schema import CitywatchConfig
from detector.contracts.schemas import schema_path
from detector.contracts.zones import STREAMS_SCHEMA_FILE

SCHEMA_ID = "https://citywatch.example/schemas/streams.v1.schema.json"


def streams_schema() -> dict[str, Any]:
    """The JSON Schema (Draft 2020-12) of a ``streams.yaml``, generated from the models."""
    body = CitywatchConfig.model_json_schema()
    head = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "citywatch streams.yaml, version 1",
        "description": "Generated from detector/config/schema.py by "
        "`python -m detector.config.schema_export`; do not edit. Secrets are written as ${VAR} and "
        "expanded by the detector, so a file is judged after expansion. What JSON Schema cannot "
        "express (zone polygons, rule names, time windows) is checked by detector/contracts/zones.py.",
    }
    return {**head, **{k: v for k, v in body.items() if k not in ("title", "description")}}


def render() -> str:
    return json.dumps(streams_schema(), indent=2, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m detector.config.schema_export", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 when the committed file is stale")
    args = parser.parse_args(argv)
    path = schema_path(STREAMS_SCHEMA_FILE)
    text = render()
    current = path.read_text(encoding="utf-8") if path.exists() else ""
    if args.check:
        if current != text:
            print(f"{path} is stale: run python -m detector.config.schema_export", file=sys.stderr)
            return 1
        print(f"{path} is current")
        return 0
    if current != text:
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    else:
        print(f"{path} is current")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
