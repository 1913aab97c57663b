"""Runs on disk: one directory per run, written so that a crash never corrupts anything.

A run directory holds ``config.json`` (what was asked), ``status.json`` (state, progress,
pid; replaced atomically), ``logs.jsonl`` (one JSON object per event, appended) and
``artifacts/``. A run is complete only when its status says ``completed``.
Every file is written to a temporary file in the same directory, fsynced, then renamed over the
target, so a reader sees either the old or the new content, never a half-written file.
"""
from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
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
    env = os.environ.get("SARFT_WORKSPACE")
    root = Path(env).expanduser() if env else Path.cwd() / "workspace"
    return ensure_dir(root, "the workspace (SARFT_WORKSPACE)" if env else "the workspace")


def runs_root() -> Path:
    return ensure_dir(workspace_root() / "runs", "the workspace's runs folder")


# ---------------------------------------------------------------- one writer, one set of errors
def write_error(exc: OSError, path: str | Path, action: str = "write") -> SarftError:
    """The one message for an OS error while writing ``path``: the problem and the fix that fits it."""
    path = Path(path)
    code = exc.errno
    reason = exc.strerror or str(exc)
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "choose an output location you can write to, or fix the folder's permissions"
    elif code in (errno.ENOTDIR, errno.EEXIST):
        blocker = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), None)
        reason = f"{blocker} is a file, not a folder" if blocker else reason
        fix = "choose an output path whose folders are folders (or move that file away)"
    elif code == errno.EISDIR:
        reason = f"{path} is a folder"
        fix = f"give a file path, e.g. {path / 'out.jsonl'}" if action == "write" else "give another path"
    elif code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        fix = "free disk space or choose another output location"
    elif code == errno.ENAMETOOLONG:
        fix = "use a shorter path"
    else:
        fix = "choose another output location"
    return SarftError(f"could not {action} {path}: {reason}", fix + ("; the previous file is unchanged" if action == "write" else ""))


def ensure_dir(path: str | Path, what: str | None = None) -> Path:
    """Create a folder (and its parents) or raise one clear SarftError saying why it cannot be."""
    path = Path(path)
    try:
        # made first, judged after: between a look and a mkdir another thread may make the folder, and
        # "it exists, so it must be a file" then misread a folder being born (two judge threads did)
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if path.is_dir():
            return path
        if path.exists():
            raise SarftError(f"{what} {path} is a file, not a folder" if what else f"{path} is a file, not a folder",
                             "point it at a folder (new or existing), or move the file away") from None
        raise write_error(exc, path, f"create {what or 'the folder'}") from None
    return path


def check_writable(path: str | Path, folder: bool = False) -> Path:
    """Check, before any long work, that ``path`` (a file, or a folder with ``folder=True``) can be
    written: its folder exists or can be made, a file can be created there, and the target is not
    a folder where a file is expected. Raises the same SarftError the final write would."""
    path = Path(path).expanduser()
    if not folder and path.is_dir():
        raise SarftError(f"{path} is a folder, not a file", f"give a file path, e.g. {path / 'out.jsonl'}")
    where = ensure_dir(path if folder else path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".sarft-write-check.", dir=where)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise write_error(exc, path) from None
    return path


def _umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no /proc: read it the classic way (set and restore)
    os.umask(mask)
    return mask


def _plain_write_mode(path: Path) -> int:
    """The permissions a plain ``open(path, "w")`` would leave: the old file's, or 0666 less the umask."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    tmp = None
    try:
        ensure_dir(path.parent)
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "is a folder", str(path))
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:100]}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), _plain_write_mode(path))  # mkstemp's 0600 would leak through the rename
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise write_error(exc, path) from None


def atomic_write_text(path: str | Path, text: str) -> None:
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate (e.g. from a "\\ud800" JSON escape)
        raise SarftError(f"could not write {path}: the text holds a character that is not valid Unicode "
                         f"({text[exc.start:exc.end]!r} at position {exc.start})",
                         "remove the broken escape (a lone surrogate such as \\ud800) from the input") from None
    atomic_write_bytes(path, data)


def _json_text(obj: Any, indent: int | None) -> str:
    """JSON as readable UTF-8; a lone surrogate (unencodable) falls back to \\u escapes, never an error."""
    text = json.dumps(obj, indent=indent, ensure_ascii=False, default=str)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(obj, indent=indent, ensure_ascii=True, default=str)
    return text


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, _json_text(obj, 2))


def read_json(path: str | Path, default: Any = None) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return default


def append_jsonl(path: str | Path, obj: Any) -> None:
    """Append one JSON line; a crash can cut only this last line, which readers skip."""
    path = Path(path)
    ensure_dir(path.parent)
    data = (_json_text(obj, None) + "\n").encode("utf-8")
    try:
        with locked(lock_path_for(path)), open(path, "a+b") as fh:
            size = fh.seek(0, os.SEEK_END)
            if size:
                fh.seek(size - 1)
                if fh.read(1) != b"\n":  # a line torn by a crash: end it, so this record stays readable
                    data = b"\n" + data
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        err = write_error(exc, path, "append to")
        raise SarftError(err.problem, err.fix + "; lines already written are kept") from None


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


TABLE_TYPES = (".jsonl", ".json", ".csv", ".parquet")
_TABLE_ENCODING = "utf-8-sig"  # a UTF-8 byte-order mark (spreadsheet exports) is dropped, not glued to the header
_CSV_FIELD_LIMIT = 64 * 1024 * 1024  # long answers in one CSV field are fine


def read_table(path: str | Path, records: bool = False, what: str = "file", example: str = "{...}", from_object=None):
    """The one reader of data tables: .jsonl, .json (a list of objects), .csv or .parquet.

    ``records=False``: a DataFrame (pandas' typed columns). ``records=True``: a list of dicts, CSV
    values as the text written. ``what`` names the file in messages (``prompt file``),
    ``example`` is one row as the fix shows it, and ``from_object(dict)`` may turn a JSON object
    into the rows (None: not rows). Every problem is one SarftError naming the file and the fix.
    """
    path = Path(path)
    if not path.exists():
        raise SarftError(f"{what} does not exist: {path}", "check the path")
    suffix = path.suffix.lower()
    if suffix not in TABLE_TYPES:
        raise SarftError(f"{path}: unsupported file type {suffix or '(none)'}", "use .jsonl, .json, .csv or .parquet")
    try:
        if suffix == ".parquet":
            import pandas as pd

            df = pd.read_parquet(path)
            return df.to_dict("records") if records else df
        if suffix == ".csv" and not records:
            import pandas as pd

            return pd.read_csv(path, encoding=_TABLE_ENCODING)
        if suffix == ".jsonl" and not records:
            import pandas as pd

            return pd.read_json(path, lines=True, encoding=_TABLE_ENCODING)
        rows = _csv_rows(path) if suffix == ".csv" else _json_rows(path, suffix, example, from_object)
        if records:
            return rows
        import pandas as pd

        return pd.DataFrame(rows)
    except SarftError:
        raise
    except json.JSONDecodeError as exc:
        raise SarftError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})", "fix the file or export it again") from None
    except UnicodeDecodeError:
        raise SarftError(f"{path}: not UTF-8 text", "re-save the file as UTF-8") from None
    except RecursionError:
        raise SarftError(f"{path}: nested too deeply to be a {what}", f"give a flat list of {example} objects") from None
    except csv.Error as exc:
        raise SarftError(f"{path}: malformed CSV ({exc})", "check quoting and delimiters") from None
    except FileNotFoundError:  # removed meanwhile
        raise SarftError(f"{what} does not exist: {path}", "check the path") from None
    except (OSError, ValueError, TypeError, NotImplementedError) as exc:  # a folder, no permission; pandas / pyarrow on damaged files
        raise SarftError(f"{path}: could not be read as {suffix[1:]} ({exc})",
                         "check that the file is complete and in the stated format") from None


def _csv_rows(path: Path) -> list[dict]:
    if csv.field_size_limit() < _CSV_FIELD_LIMIT:
        csv.field_size_limit(_CSV_FIELD_LIMIT)
    with open(path, encoding=_TABLE_ENCODING, newline="") as fh:
        rows = list(csv.DictReader(fh, strict=True))  # strict: an unterminated quote is an error, not one huge field
    for i, row in enumerate(rows):
        if None in row:
            raise SarftError(f"{path}: row {i + 1} has more fields than the header", "check quoting and delimiters (a comma inside an unquoted field?)")
        if any(v is None for v in row.values()):
            raise SarftError(f"{path}: row {i + 1} has fewer fields than the header", "check quoting and delimiters (an unterminated quote?)")
    return rows


def _json_rows(path: Path, suffix: str, example: str, from_object) -> list[dict]:
    if suffix == ".jsonl":
        rows = []
        with open(path, encoding=_TABLE_ENCODING) as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise SarftError(f"{path}: line {lineno} is not valid JSON ({exc.msg})",
                                     "fix or remove that line; each line must hold one JSON object") from None
                if not isinstance(obj, dict):
                    raise SarftError(f"{path}: line {lineno} holds a {type(obj).__name__}, not a JSON object", "write one object per line")
                rows.append(obj)
        return rows
    with open(path, encoding=_TABLE_ENCODING) as fh:
        data = json.load(fh)
    if isinstance(data, dict) and from_object is not None:
        data = from_object(data)
    if not isinstance(data, list):
        raise SarftError(f"{path}: expected a JSON list of objects", f"write [{example}, ...] or use .jsonl")
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            raise SarftError(f"{path}: item {i} is a {type(row).__name__}, not an object", f"each item must be an object such as {example}")
    return data


def json_digest(*parts) -> str:
    """SHA-256 (hex) of JSON values, each serialised with sorted keys and ended by a NUL byte: the
    one content key of caches (score records, influences). Lone surrogates (text decoded with
    surrogateescape) are kept, not refused."""
    h = hashlib.sha256()
    for part in parts:
        h.update(json.dumps(part, sort_keys=True, ensure_ascii=False).encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()


def file_digest(path: str | Path) -> str:
    """The sha256 of a file's bytes (16 hex digits): what a cache key or a resume check holds for
    an input file, so that an edited file is never mistaken for the one a result came from."""
    path = Path(path)
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise write_error(exc, path, "read") from None
    return digest.hexdigest()[:16]


def inputs_fingerprint(files: dict[str, str | Path | None]) -> dict[str, str]:
    """``{name: file_digest}`` of the named input files that are given (None: not used)."""
    return {name: file_digest(path) for name, path in files.items() if path is not None}


def changed_inputs(recorded: dict, current: dict[str, str]) -> list[str]:
    """The names whose digest differs between a recorded fingerprint and the current one (a name
    only one side has counts as changed: a file added or dropped changes the result too)."""
    recorded = recorded if isinstance(recorded, dict) else {}
    return sorted(k for k in set(recorded) | set(current) if recorded.get(k) != current.get(k))


def slug(text: str, keep: str = "._-", sep: str = "-", limit: int | None = 60, default: str = "run", lower: bool = False) -> str:
    """``text`` as a file-name part: each run of characters other than ASCII letters, digits and
    ``keep`` becomes ``sep``, which is stripped from the ends; then lower-cased (``lower``) and
    cut to its first ``limit`` characters (a negative limit keeps the last ones); ``default`` when
    nothing is left."""
    out = re.sub(f"[^A-Za-z0-9{re.escape(keep)}]+", sep, str(text)).strip(sep)
    if lower:
        out = out.lower()
    if limit is not None:
        out = out[:limit] if limit >= 0 else out[limit:]
    return out or default


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
        return ensure_dir(self.path / "artifacts")

    @property
    def name(self) -> str:
        return self.path.name

    def config(self) -> dict:
        data = read_json_object(self.config_path, {})
        return {} if data is None else _typed_fields(data, _CONFIG_TYPES)

    def status(self) -> dict:
        data = read_json_object(self.status_path, {"state": "created"})
        if data is None or data.get("state") not in STATES:
            # damaged by hand or by a disk fault (our own writes are atomic): never show it as complete
            return {"state": "failed", "error": f"{self.status_path.name} is unreadable", "unreadable": True}
        return _typed_fields(data, _STATUS_TYPES)

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


_NUMBER = (int, float)
_STATUS_TYPES = {
    "updated": _NUMBER, "created": _NUMBER, "started": _NUMBER, "seconds": _NUMBER, "eta_s": _NUMBER, "train_loss": _NUMBER,
    "step": int, "max_steps": int, "pid": int, "last_checkpoint_step": int, "samples": int, "dh": int, "exit_code": int,
    "error": str, "fix": str, "reason": str, "last_checkpoint": str, "weights": str, "method": str, "role": str,
}
_CONFIG_TYPES = {"kind": str, "model": str, "role": str, "method": str, "source_run": str, "model_fingerprint": str}


def _typed_fields(data: dict, types: dict) -> dict:
    """``data`` without the known fields whose type is wrong (a hand-edited file): readers such as
    the dashboard then see a field as missing, never as a value that crashes them."""
    return {k: v for k, v in data.items()
            if k not in types or (v is None and k != "state") or (isinstance(v, types[k]) and not isinstance(v, bool))}


def read_json_object(path: str | Path, default: dict | None = None) -> dict | None:
    """A JSON object from ``path``; ``default`` when absent, None when unreadable or not an object
    (a damaged file, never an exception: callers decide what a damaged file means)."""
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


# what the store itself may leave in a run folder before its config.json (the owner's lock, progress)
# control files a command may find in its folder before it starts (checkpoint.now: a checkpoint asked for early)
_HOUSEKEEPING = frozenset({".owner.lock", ".owner.pid", "progress.json", "checkpoint.now"})


def _article(word: str) -> str:
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word


def claim_output_dir(path: str | Path, kind: str | None, what: str, own: frozenset | set = frozenset()) -> Path:
    """The one check of a command's output folder, before any work: ``path`` is (or can be made) a
    folder this process can write, and it holds nothing but a ``kind`` run (resumed as it is) or,
    with no config.json, only the names in ``own`` (what the command itself reads and writes there).
    Another kind of run, a damaged config.json or anything else is one SarftError, the folder untouched:
    writing into it would overwrite or mix with what is there. ``what`` names the command's output."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise SarftError(f"{path} is a file, not a run directory", "give --out a directory path (new or a run to resume)")
    keep = "choose a new or empty folder for --out (the folder's files stay there, untouched)"
    config_path = path / "config.json"
    if config_path.exists():
        config = read_json_object(config_path, None)
        if config is None:
            raise SarftError(f"{config_path} is damaged (not a JSON object), so {path} cannot be resumed as {_article(what)}", keep)
        found = config.get("kind")
        if kind is not None and found == kind:
            return check_writable(path, folder=True)
        held = f"{_article(found)} run" if isinstance(found, str) and found else "a config.json that no SaRFT run wrote (a model?)"
        raise SarftError(f"{path} holds {held}, not {_article(what)}", keep)
    if path.is_dir():
        try:
            foreign = sorted(p.name for p in path.iterdir() if p.name not in own and p.name not in _HOUSEKEEPING)
        except OSError as exc:
            raise write_error(exc, path, "read") from None
        if foreign:
            shown = ", ".join(foreign[:4]) + (f" and {len(foreign) - 4} more" if len(foreign) > 4 else "")
            raise SarftError(f"{path} holds files that are not {_article(what)}'s ({shown})", keep)
    ensure_dir(path, "the run directory")
    return check_writable(path, folder=True)


def create_run(kind: str, config: dict, path: str | Path | None = None, name: str | None = None) -> RunDir:
    """Create (or reopen, for resume) a run directory and record its config; a ``path`` that holds
    anything but a ``kind`` run is refused (:func:`claim_output_dir`)."""
    if path is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = runs_root() / f"{stamp}-{slug(name or kind)}-{uuid.uuid4().hex[:4]}"
    run = RunDir(Path(path))
    claim_output_dir(run.path, kind, f"{kind} run")
    atomic_write_json(run.config_path, dict(config, kind=kind))
    if not run.status_path.exists():
        run.set_status("created", created=time.time())
    return run


def list_runs(root: str | Path | None = None) -> list[RunDir]:
    """Every run directory under ``root``, newest first (derived from disk: no index to corrupt)."""
    root = Path(root) if root else runs_root()
    runs = [RunDir(p.parent) for p in root.glob("*/config.json")]
    return sorted(runs, key=_updated, reverse=True)


class RunBusy(SarftError):
    """Another live process owns the run directory."""


class OwnerLock:
    """The claim of the one process that writes a run directory (``RUN/.owner.lock``).

    Non-blocking: a second writer (a second ``train`` into the same ``--out``) fails at once with
    the owner's pid instead of interleaving its logs, config and weights with the first. The OS
    releases the lock when the owner dies, so a crashed run never stays locked. The owner's pid
    lives beside the lock, in ``RUN/.owner.pid`` (a lock file's content is the lock library's).
    """

    NAME = ".owner.lock"
    PID_NAME = ".owner.pid"

    def __init__(self, run_path: str | Path, what: str = "run"):
        self.run_path = Path(run_path)
        self.path = self.run_path / self.NAME
        self.pid_path = self.run_path / self.PID_NAME
        self.what = what
        self._lock = None

    def acquire(self) -> "OwnerLock":
        lock = file_lock(self.path, wait=False)
        if lock is None:
            try:
                owner = self.pid_path.read_text(encoding="utf-8", errors="replace").strip()[:40]
            except OSError:
                owner = ""
            raise RunBusy(
                f"{self.run_path} is in use: another process (pid {owner or 'unknown'}) is writing this {self.what} now",
                f"wait for it to finish (or stop it: kill -TERM {owner}), or choose another --out" if owner.isdigit()
                else "wait for it to finish, or choose another --out",
            )
        try:
            atomic_write_text(self.pid_path, str(os.getpid()))
        except SarftError:
            lock.release()
            raise
        self._lock = lock
        return self

    def release(self) -> None:
        if self._lock is not None:
            with contextlib.suppress(OSError):
                self.pid_path.unlink()
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "OwnerLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# ---------------------------------------------------------------- the one file lock
def lock_path_for(path: str | Path) -> Path:
    """The lock file that guards ``path``: ``.NAME.lock`` beside it (never the file itself, whose
    content the lock library may truncate)."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


def file_lock(path: str | Path, wait: bool = True):
    """An exclusive inter-process lock on the lock file ``path`` (created with its folder if needed),
    held when returned: ``filelock.FileLock``, an flock on Unix, so the OS releases it when the
    holder dies. ``wait=False`` makes one try and returns None when another holder has it.
    Release it with ``.release()``."""
    from filelock import FileLock, Timeout

    path = Path(path)
    ensure_dir(path.parent)
    lock = FileLock(str(path), thread_local=False)
    try:
        lock.acquire(timeout=-1 if wait else 0)
    except Timeout:
        return None
    except OSError as exc:
        raise write_error(exc, path, "create the lock file") from None
    return lock


@contextlib.contextmanager
def locked(path: str | Path) -> Iterator[None]:
    """Hold the exclusive lock on the lock file ``path`` (waiting for it) for the ``with`` block."""
    lock = file_lock(path)
    try:
        yield
    finally:
        lock.release()


# ---------------------------------------------------------------- structured progress
PROGRESS_FILE = "progress.json"
PROGRESS_ENV = "SARFT_PROGRESS"  # set by a job's supervisor: where the command reports, taken at CLI start
_job_progress: list[Path] = []


def take_progress_target() -> None:
    """Take ``$SARFT_PROGRESS`` (the job's progress file) out of the environment, so that the
    commands this one starts (a survey's ``train``, a worker) do not write over its progress."""
    target = os.environ.pop(PROGRESS_ENV, "")
    if target:
        _job_progress[:] = [Path(target)]


class Progress:
    """Structured progress of one long piece of work: ``progress.json`` with done, total, unit,
    phase, fraction, eta_s and updated, written atomically (through the one writer) at most every
    ``every_s`` seconds and always when the work is done. It goes to ``RUN/progress.json`` when
    the work has a run directory and to the job's progress file when a job started the command.
    Call it as a ``progress(done, total)`` callback."""

    def __init__(self, run_path: str | Path | None = None, unit: str = "", phase: str = "", every_s: float = 1.0):
        targets = ([Path(run_path) / PROGRESS_FILE] if run_path is not None else []) + _job_progress
        self.targets = list(dict.fromkeys(targets))
        self.unit, self.phase, self.every_s = unit, phase, every_s
        self._start: tuple[float, float] | None = None  # (time, done) when this phase began
        self._last = 0.0

    def __call__(self, done: float, total: float, phase: str | None = None) -> None:
        now = time.time()
        if phase is not None and phase != self.phase:
            self.phase, self._start, self._last = phase, None, 0.0
        if self._start is None:
            self._start = (now, float(done))
        finished = total and done >= total
        if not self.targets or (now - self._last < self.every_s and not finished):
            return
        self._last = now
        t0, done0 = self._start
        rate = (done - done0) / (now - t0) if now > t0 and done > done0 else 0.0
        eta = (total - done) / rate if rate > 0 and total else None
        record = {"done": done, "total": total, "unit": self.unit, "phase": self.phase,
                  "fraction": min(1.0, done / total) if total else None, "eta_s": eta, "updated": now}
        for target in self.targets:
            with contextlib.suppress(SarftError):  # progress is a view: never stop the work for it
                atomic_write_json(target, record)


def read_progress(path: str | Path) -> dict | None:
    """The progress record in ``path`` (a progress.json or the folder holding one), with sound
    types; None when absent or damaged."""
    path = Path(path)
    data = read_json_object(path / PROGRESS_FILE if path.is_dir() else path, None)
    if not data:
        return None
    data = _typed_fields(data, {"done": _NUMBER, "total": _NUMBER, "fraction": _NUMBER, "eta_s": _NUMBER,
                                "updated": _NUMBER, "unit": str, "phase": str})
    if "done" not in data or "total" not in data:
        return None
    fraction = data.get("fraction")
    data["fraction"] = None if fraction is None or fraction != fraction else min(1.0, max(0.0, float(fraction)))
    return data
