"""Keep ultralytics offline: no downloads, no pip installs, no analytics, no font fetches.

Call :func:`prepare_offline` before the first ``import ultralytics`` anywhere in the process: ultralytics
reads its environment variables once, at import. It sets

* ``YOLO_OFFLINE=true`` (ultralytics then treats the machine as offline),
* ``YOLO_AUTOINSTALL=false`` (no ``pip install`` behind our back),
* ``YOLO_CONFIG_DIR=<repo>/var/yolo-config`` (settings.json and fonts live with us, not in ``~/.config``),

places matplotlib's DejaVuSans as ``Arial.ttf`` / ``Arial.Unicode.ttf`` where ``check_font`` looks (dataset
checks call it even with ``plots=False``), and, once ultralytics is imported, turns its settings ``sync``
and the experiment-tracker integrations off and points its runs / datasets / weights folders into ``var/``.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

from detector.contracts.errors import DetectorError

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG_DIR = REPO_ROOT / "var" / "yolo-config"
FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")
# ultralytics keeps its settings and fonts in this sub-folder of YOLO_CONFIG_DIR (get_user_config_dir)
_SUBDIR = "Ultralytics"

log = logging.getLogger(__name__)
_prepared: Path | None = None  # the settings folder, once prepare_offline() has run in this process


class OfflineSetupError(DetectorError, RuntimeError):
    """ultralytics could not be made safe to run offline."""


def _find_dejavu() -> Path | None:
    try:
        import matplotlib
    except ImportError:
        return None
    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    return font if font.is_file() else None


def _place_fonts(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    missing = [folder / n for n in FONT_NAMES if not (folder / n).is_file()]
    if not missing:
        return
    src = _find_dejavu()
    if src is None:
        # ultralytics would try to download Arial; with YOLO_OFFLINE it fails, so say how to fix it.
        raise OfflineSetupError(
            f"no font to place in {folder}: install matplotlib (it ships DejaVuSans) or copy any TTF font "
            "there "
            f"as {' and '.join(FONT_NAMES)}"
        )
    for dst in missing:
        shutil.copyfile(src, dst)


def _configure_imported() -> None:
    """Settings that only exist once ultralytics is imported."""
    from ultralytics.utils import SETTINGS, USER_CONFIG_DIR

    var = REPO_ROOT / "var"
    wanted = {
        "sync": False,
        "clearml": False,
        "comet": False,
        "dvc": False,
        "mlflow": False,
        "raytune": False,
        "tensorboard": False,
        "wandb": False,
        "vscode_msg": False,
        "openvino_msg": False,
        "runs_dir": str(REPO_ROOT / "runs"),
        "datasets_dir": str(REPO_ROOT / "datasets"),
        "weights_dir": str(var / "yolo-weights"),
    }
    changed = {k: v for k, v in wanted.items() if SETTINGS.get(k) != v}
    if changed:
        SETTINGS.update(changed)
    _place_fonts(Path(USER_CONFIG_DIR))


def prepare_offline(config_dir: str | Path | None = None) -> Path:
    """Make ultralytics run offline; returns its settings folder (YOLO_CONFIG_DIR/Ultralytics). Idempotent.

    If ultralytics was imported before the first call, its config folder is already fixed: the settings and
    fonts are applied to that folder and a warning is logged. Later calls only check that the fonts are still
    in place (someone may have cleaned ``var/``).
    """
    global _prepared
    if _prepared is not None:
        _place_fonts(_prepared)
        return _prepared
    os.environ["YOLO_OFFLINE"] = "true"
    os.environ["YOLO_AUTOINSTALL"] = "false"
    os.environ.setdefault("YOLO_VERBOSE", "true")
    if config_dir is not None:
        cfg = Path(config_dir).resolve()
    elif os.environ.get("YOLO_CONFIG_DIR"):
        cfg = Path(os.environ["YOLO_CONFIG_DIR"]).expanduser().resolve()
    else:
        cfg = DEFAULT_CONFIG_DIR
    already = "ultralytics" in sys.modules
    if not already:
        os.environ["YOLO_CONFIG_DIR"] = str(cfg)
        cfg.mkdir(parents=True, exist_ok=True)
        _place_fonts(cfg / _SUBDIR)
    import ultralytics.utils as uu

    if already:
        log.warning(
            "ultralytics was imported before prepare_offline(); its config folder stays %s",
            uu.USER_CONFIG_DIR,
        )
    if uu.ONLINE:
        # Only reachable when ultralytics was imported earlier, on a machine with network access.
        import importlib

        for name in ("ultralytics.utils", "ultralytics.utils.checks", "ultralytics.utils.events"):
            mod = importlib.import_module(name)
            if getattr(mod, "ONLINE", False):
                setattr(mod, "ONLINE", False)  # noqa: B010  (a module constant, not an attribute we own)
    _configure_imported()
    _prepared = Path(uu.USER_CONFIG_DIR)
    return _prepared
