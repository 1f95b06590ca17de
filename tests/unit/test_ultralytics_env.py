"""prepare_offline() in a fresh interpreter: env set before import, fonts placed, sync and trackers off."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import json, os, sys
from detector.contracts.ultralytics_env import prepare_offline
folder = prepare_offline(sys.argv[1])
again = prepare_offline()
from ultralytics.utils import ONLINE, SETTINGS, USER_CONFIG_DIR
print(json.dumps({
    "folder": str(folder), "again": str(again), "user_config_dir": str(USER_CONFIG_DIR),
    "online": ONLINE, "sync": SETTINGS["sync"], "mlflow": SETTINGS["mlflow"],
    "offline_env": os.environ["YOLO_OFFLINE"], "autoinstall_env": os.environ["YOLO_AUTOINSTALL"],
    "fonts": sorted(p.name for p in folder.glob("Arial*.ttf")),
}))
"""


def test_prepare_offline_fresh_process(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "yolo")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["folder"] == got["again"] == got["user_config_dir"] == str(tmp_path / "yolo" / "Ultralytics")
    assert got["online"] is False
    assert got["sync"] is False and got["mlflow"] is False
    assert got["offline_env"] == "true" and got["autoinstall_env"] == "false"
    assert got["fonts"] == ["Arial.Unicode.ttf", "Arial.ttf"]
    assert "imported before" not in out.stderr
