"""No file of the repository names a path of the machine it was made on.

Cards, manifest entries, exports' metadata and docs travel with the repository: a path like the
checkout's own folder, a home folder or a temporary folder means nothing on another machine (and says
who built it where). The rule, over every text file git tracks or would add (``git ls-files --cached
--others --exclude-standard``; a file with a NUL byte in its first 8000 bytes is binary and skipped, as
git does):

- the checkout's absolute path and this user's home folder never appear;
- no absolute path under the machine roots of :data:`ROOTS` (``/work``, ``/root``, ``/home``, ``/Users``,
  ``/tmp``, ``/var/folders``): a ``/`` that starts such a root after a character that cannot end a path
  component (start of line, space, quote, bracket, ``=``, ``:``); ``OUT/work/run.json`` is a relative path
  and passes;
- except the lines of :data:`ALLOWED`, each with the exact text it may hold and why.

Binary model files (``.pt``, ``.onnx``, ``.bin`` under ``models/``) are searched as bytes for the same
machine roots (:func:`test_no_model_file_names_a_machine_path`): ultralytics records its training paths
inside a checkpoint and an export's metadata. ``citywatch train`` strips the checkout from the released
checkpoint (``training.train.scrub_checkpoint``, tested in ``tests/integration/test_training_smoke.py``) and
``training/export.py`` the work folder and the checkout from an export's metadata (tested below); the
citywatch-synth weights released before the rule were put through the same two functions (detections
unchanged, their sha256 re-recorded in the manifest and the cards).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from detector.contracts.manifest import REPO_ROOT

ROOTS = ("work", "root", "home", "Users", "tmp", "var/folders", "private/var/folders")
_TAIL = r"[^\s'\"`)\]}>,;]*"  # the rest of a path: up to a space, quote or closing bracket
_ROOT_PATH = re.compile(r"(?<![\w.~$/-])/(?:" + "|".join(ROOTS) + r")/" + _TAIL)

#: (file, exact text): why it is no machine path.
ALLOWED = {
    ("tests/unit/test_tune_cache.py", "/tmp/x/tune.json"): "a made-up CITYWATCH_TUNE_CACHE value",
    ("tests/integration/test_broker_acl.py", "/home/door/open"): "an MQTT topic another system might use",
}


def _text_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    files = []
    for name in sorted(set(filter(None, out.split("\0")))):
        path = REPO_ROOT / name
        if not path.is_file():
            continue  # deleted in the work tree
        with path.open("rb") as fh:
            if b"\0" in fh.read(8000):
                continue
        files.append(name)
    return files


def machine_paths(text: str, own: list[str]) -> list[str]:
    """Every machine path in ``text``: ``own`` (the checkout, the home folder) anywhere, and absolute
    paths under :data:`ROOTS`."""
    found = [m.group(0) for m in _ROOT_PATH.finditer(text)]
    for prefix in own:
        found += re.findall(re.escape(prefix) + _TAIL, text)
    return list(dict.fromkeys(found))  # a path under a root and in the checkout is one finding


def _own_paths() -> list[str]:
    own = [f"{REPO_ROOT}/"]
    home = str(Path.home())
    if home not in ("/", ""):
        own.append(f"{home}/")
    return own


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("data: /tmp/citywatch-export-9jmvybio/c.yaml", ["/tmp/citywatch-export-9jmvybio/c.yaml"]),
        ("description: trained on /work/main/runs/train/x/data.yaml", ["/work/main/runs/train/x/data.yaml"]),
        ("see `/root/.cache/x`", ["/root/.cache/x"]),
        ("project: /home/alice/citywatch/runs", ["/home/alice/citywatch/runs"]),
        ('"path": "/Users/bob/models"', ["/Users/bob/models"]),
        ("TMP=/var/folders/xy/T/abc", ["/var/folders/xy/T/abc"]),
        ("``OUT/work/run.json`` records the input", []),  # relative: OUT's work folder
        ("project: runs/train", []),
        ("data: datasets/mix-1.2/dataset.yaml", []),
        ("MQTT topic citywatch/v1/home/x", []),
        ("/etc/mosquitto/mosquitto.conf and /usr/sbin/mosquitto", []),  # system paths, the same everywhere
        ("checkout at <repo>/models/m.pt", ["<repo>/models/m.pt"]),
    ],
)  # fmt: skip
def test_what_counts_as_a_machine_path(text: str, expected: list[str]) -> None:
    assert machine_paths(text, ["<repo>/"]) == expected


def test_no_committed_file_names_a_machine_path() -> None:
    own = _own_paths()
    found: list[str] = []
    allowed_seen: set[tuple[str, str]] = set()
    for name in _text_files():
        if name == "tests/unit/test_no_machine_paths.py":
            continue  # the table above holds examples on purpose
        text = (REPO_ROOT / name).read_text(encoding="utf-8", errors="replace")
        for lineno, line in enumerate(text.splitlines(), 1):
            for hit in machine_paths(line, own):
                if (name, hit) in ALLOWED:
                    allowed_seen.add((name, hit))
                    continue
                found.append(f"{name}:{lineno}: {hit}")
    assert not found, "machine paths in the repository (make them relative, or see ALLOWED):\n" + "\n".join(
        found
    )
    assert allowed_seen == set(ALLOWED), (
        f"ALLOWED lists text no file holds any more: {set(ALLOWED) - allowed_seen}"
    )


def test_exports_forget_the_machine_folders(tmp_path: Path) -> None:
    """``training.export.scrub_paths``: ONNX metadata, an OpenVINO folder's metadata.yaml and .xml."""
    onnx = pytest.importorskip("onnx")  # the train extra; `make install` has it
    from onnx import TensorProto, helper

    from training.export import scrub_paths

    work = tmp_path / "citywatch-export-abc123"
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph)
    helper.set_model_props(
        model,
        {
            "description": f"trained on {REPO_ROOT}/runs/train/m/data.yaml",
            "args": f"{{'data': '{work}/calibration.yaml'}}",
        },
    )
    onnx.save(model, str(tmp_path / "m.onnx"))
    folder = tmp_path / "m_openvino_model"
    folder.mkdir()
    (folder / "metadata.yaml").write_text(f"args:\n  data: {work}/calibration.yaml\n")
    (folder / "m.xml").write_text(
        f"<rt_info><args value=\"{{'data': '{work}/calibration.yaml'}}\" /></rt_info>"
    )
    (folder / "m.bin").write_bytes(b"\0weights")

    for out in (tmp_path / "m.onnx", folder):
        scrub_paths(out, [f"{work}/", f"{REPO_ROOT}/"])

    props = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert props == {
        "description": "trained on runs/train/m/data.yaml",
        "args": "{'data': 'calibration.yaml'}",
    }
    assert (folder / "metadata.yaml").read_text() == "args:\n  data: calibration.yaml\n"
    assert (
        folder / "m.xml"
    ).read_text() == "<rt_info><args value=\"{'data': 'calibration.yaml'}\" /></rt_info>"
    assert (folder / "m.bin").read_bytes() == b"\0weights"


_ROOT_BYTES = re.compile(rb"(?<![\w.~$/-])/(?:" + "|".join(ROOTS).encode() + rb")/[\x21-\x7e]{0,80}")


def test_no_model_file_names_a_machine_path() -> None:
    own = [p.encode() for p in _own_paths()]
    found: list[str] = []
    for path in sorted((REPO_ROOT / "models").rglob("*")):
        if path.suffix not in (".pt", ".onnx", ".bin") or not path.is_file():
            continue
        data = path.read_bytes()
        hits = [m.group(0) for m in _ROOT_BYTES.finditer(data)] + [p for p in own if p in data]
        if hits:
            shown = ", ".join(sorted({h[:60].decode("ascii", "replace") for h in hits})[:3])
            found.append(f"{path.relative_to(REPO_ROOT)}: {shown}")
    assert not found, (
        "machine paths inside model files (training.train.scrub_checkpoint / training.export."
        + ("scrub_paths):\n" + "\n".join(found))
    )
