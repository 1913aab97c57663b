"""Runs on disk: one directory per run, written so that a crash never corrupts anything.

A run directory holds ``config.json`` (what was asked), ``status.json`` (state, progress,
pid; replaced atomically), ``logs.jsonl`` (one JSON object per event, appended) and
``artifacts/``. A run is complete only when its status says ``completed``.
Every file is written to a temporary file in the same directory, fsynced, then renamed over the
target, so a reader sees either the old or the new content, never a half-written file.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from sarft_core.errors import SarftError

STATES = ("created", "running", "completed", "failed", "cancelled")
FINAL_STATES = ("completed", "failed", "cancelled")


def workspace_root() -> Path:
    root = Path(os.environ.get("SARFT_WORKSPACE") or Path.cwd() / "workspace")
    root.mkdir(parents=True, exist_ok=True)
    return root


def runs_root() -> Path:
    path = workspace_root() / "runs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise SarftError(f"could not write {path}: {exc.strerror or exc}", "free disk space or choose another output directory; the previous file is unchanged") from exc


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str))


def read_json(path: str | Path, default: Any = None) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return default


def append_jsonl(path: str | Path, obj: Any) -> None:
    """Append one JSON line; a crash can cut only this last line, which readers skip."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(obj, ensure_ascii=False, default=str) + "\n").encode("utf-8")
    try:
        with open(path, "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                size = fh.seek(0, os.SEEK_END)
                if size:
                    fh.seek(size - 1)
                    if fh.read(1) != b"\n":  # a line torn by a crash: end it, so this record stays readable
                        data = b"\n" + data
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
    except OSError as exc:
        raise SarftError(f"could not append to {path}: {exc.strerror or exc}",
                         "free disk space or choose another output directory; lines already written are kept") from exc


def read_jsonl(path: str | Path) -> list[dict]:
    """All complete JSON lines of a file (a torn last line from a crash is ignored)."""
    rows: list[dict] = []
    try:
        with open(path, "rb") as fh:
            for line in fh:
                if not line.endswith(b"\n"):
                    break
                with contextlib.suppress(ValueError, RecursionError):  # a damaged line (bad JSON or bytes) is skipped
                    row = json.loads(line.decode("utf-8"))
                    if isinstance(row, dict):
                        rows.append(row)
    except FileNotFoundError:
        pass
    return rows


def write_table(df, path: str | Path) -> None:
    """Write a DataFrame as .parquet, .jsonl or .csv, atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import io

        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        atomic_write_bytes(path, buf.getvalue())
    elif suffix == ".jsonl":
        atomic_write_text(path, df.to_json(orient="records", lines=True, force_ascii=False))
    elif suffix == ".csv":
        atomic_write_text(path, df.to_csv(index=False))
    else:
        raise SarftError(f"unsupported output type {suffix or '(none)'} for {path}", "use .parquet, .jsonl or .csv")


def read_table(path: str | Path):
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise SarftError(f"file does not exist: {path}", "check the path")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        if suffix == ".jsonl":
            return pd.read_json(path, lines=True)
        if suffix == ".csv":
            return pd.read_csv(path)
    except (ValueError, TypeError, NotImplementedError, OSError, RecursionError) as exc:  # pandas / pyarrow on damaged files
        raise SarftError(f"{path}: could not be read as {suffix[1:]} ({exc})", "check that the file is complete") from None
    raise SarftError(f"unsupported file type {suffix or '(none)'}: {path}", "use .parquet, .jsonl or .csv")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60] or "run"


@dataclass
class RunDir:
    path: Path

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def status_path(self) -> Path:
        return self.path / "status.json"

    @property
    def log_path(self) -> Path:
        return self.path / "logs.jsonl"

    @property
    def artifacts(self) -> Path:
        p = self.path / "artifacts"
        p.mkdir(parents=True, exist_ok=True)
        return p

    @property
    def name(self) -> str:
        return self.path.name

    def config(self) -> dict:
        data = _read_object(self.config_path, {})
        return {} if data is None else data

    def status(self) -> dict:
        data = _read_object(self.status_path, {"state": "created"})
        if data is None or data.get("state") not in STATES:
            # damaged by hand or by a disk fault (our own writes are atomic): never show it as complete
            return {"state": "failed", "error": f"{self.status_path.name} is unreadable", "unreadable": True}
        return data

    def set_status(self, state: str, **fields) -> dict:
        if state not in STATES:
            raise ValueError(f"unknown run state {state}")
        status = self.status()
        if status.pop("unreadable", False):
            status = {}
        status.update(fields, state=state, updated=time.time())
        atomic_write_json(self.status_path, status)
        return status

    def log(self, **event) -> None:
        event.setdefault("time", time.time())
        append_jsonl(self.log_path, event)

    def logs(self) -> list[dict]:
        return read_jsonl(self.log_path)

    @property
    def is_complete(self) -> bool:
        return self.status().get("state") == "completed"


def _read_object(path: Path, default: dict) -> dict | None:
    """A JSON object from ``path``, ``default`` when absent, None when unreadable or not an object."""
    try:
        data = read_json(path, default)
    except (ValueError, OSError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None
    if data is None:
        return default
    return data if isinstance(data, dict) else None


def _updated(run: "RunDir") -> float:
    value = run.status().get("updated", 0)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def create_run(kind: str, config: dict, path: str | Path | None = None, name: str | None = None) -> RunDir:
    """Create (or reopen, for resume) a run directory and record its config."""
    if path is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = runs_root() / f"{stamp}-{_slug(name or kind)}-{uuid.uuid4().hex[:4]}"
    run = RunDir(Path(path))
    if run.path.exists() and not run.path.is_dir():
        raise SarftError(f"{run.path} is a file, not a run directory", "give --out a directory path (new or a run to resume)")
    try:
        run.path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SarftError(f"could not create the run directory {run.path}: {exc.strerror or exc}", "choose another output directory") from exc
    atomic_write_json(run.config_path, dict(config, kind=kind))
    if not run.status_path.exists():
        run.set_status("created", created=time.time())
    return run


def list_runs(root: str | Path | None = None) -> list[RunDir]:
    """Every run directory under ``root``, newest first (derived from disk: no index to corrupt)."""
    root = Path(root) if root else runs_root()
    runs = [RunDir(p.parent) for p in root.glob("*/config.json")]
    return sorted(runs, key=_updated, reverse=True)


@contextlib.contextmanager
def locked(path: str | Path) -> Iterator[None]:
    """An exclusive inter-process lock on ``path`` (created if needed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
