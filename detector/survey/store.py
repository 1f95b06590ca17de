"""The survey's work folder: what has been done, durably, so a killed run resumes where it stopped.

``OUT/work/run.json`` records the input's identity and every setting that changes results;
``OUT/work/frames.jsonl`` gets one line per processed frame (its observations), appended and fsynced
after the frame's evidence crops are on disk (``OUT/work/crops/``). A line cut by a kill is dropped on
resume and that frame is processed again. Resuming with another input or other settings is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from detector.survey.errors import SurveyResumeError

VERSION = 1


def file_identity(path: Path, chunk: int = 1 << 20) -> dict[str, Any]:
    """Name, size and a hash of the first and last MiB: cheap, and changes when the file does."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file())
        h = hashlib.sha256()
        for f in files:
            h.update(f"{f.name}\0{f.stat().st_size}\0".encode())
        return {"name": path.name, "files": len(files), "sha256": h.hexdigest()}
    size = path.stat().st_size
    h = hashlib.sha256()
    with path.open("rb") as fh:
        h.update(fh.read(chunk))
        if size > chunk:
            fh.seek(max(chunk, size - chunk))
            h.update(fh.read(chunk))
    return {"name": path.name, "size": size, "sha256": h.hexdigest()}


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class WorkStore:
    def __init__(self, out_dir: Path) -> None:
        self.out = out_dir
        self.dir = out_dir / "work"
        self.crops = self.dir / "crops"
        self.run_file = self.dir / "run.json"
        self.frames_file = self.dir / "frames.jsonl"

    def start(self, run: dict[str, Any], *, resume: bool, force: bool) -> set[int]:
        """Open the work folder for ``run``; returns the frame indexes already done."""
        run = {"version": VERSION, **run}
        if resume:
            if not self.run_file.is_file():
                raise SurveyResumeError(
                    f"--resume: {self.dir} holds no survey to resume; run again without --resume"
                )
            old = json.loads(self.run_file.read_text(encoding="utf-8"))
            diff = sorted(k for k in set(old) | set(run) if old.get(k) != run.get(k))
            if diff:
                raise SurveyResumeError(
                    f"--resume: the survey in {self.dir} was started with a different {', '.join(diff)}; "
                    "resume with the same input and options, or start afresh with --force"
                )
            return self._done()
        if self.frames_file.exists() and not force:
            raise SurveyResumeError(
                f"{self.out} already holds a survey in progress ({self.frames_file.name}); pass --resume to "
                "continue it or --force to start again"
            )
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.crops.mkdir(parents=True)
        self._write_atomic(self.run_file, json.dumps(run, indent=1, sort_keys=True))
        self.frames_file.touch()
        return set()

    def _done(self) -> set[int]:
        if not self.frames_file.exists():
            return set()
        data = self.frames_file.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):  # a line cut by a kill: drop it, that frame is done again
            with self.frames_file.open("r+b") as f:
                f.truncate(end)
        self.crops.mkdir(parents=True, exist_ok=True)
        return {int(rec["index"]) for rec in self.records()}

    def records(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if not self.frames_file.exists():
            return out
        with self.frames_file.open(encoding="utf-8") as f:
            for line in f:
                if line.endswith("\n") and line.strip():
                    out.append(json.loads(line))
        return out

    def record(self, index: int, obs: list[dict[str, Any]], crops: list[bytes], unplaced_dets: int) -> None:
        """Store one processed frame: crops first, then its line (the line is the commit)."""
        for o, jpeg in zip(obs, crops, strict=True):
            name = f"f{index:06d}_{int(o['k']):03d}.jpg"
            o["crop"] = f"work/crops/{name}"
            (self.crops / name).write_bytes(jpeg)
        line = json.dumps(
            {"index": index, "obs": obs, "unplaced_dets": unplaced_dets},
            separators=(",", ":"),
            sort_keys=True,
        )
        with self.frames_file.open("a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _write_atomic(self, path: Path, text: str) -> None:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        _fsync_dir(path.parent)

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
