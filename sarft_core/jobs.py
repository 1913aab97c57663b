"""Background jobs: `python -m sarft_core ...` subprocesses that outlive the page that started them.

The CLI is the single engine: a job is always a ``python -m sarft_core COMMAND ...`` command line,
shown to the user verbatim so the same audit can be rerun anywhere. Each job is started in its
own session (so its own process group) under a small supervisor (``python -m sarft_core.jobs
supervise JOB_DIR``) that waits for the command and records its exit code. Cancel signals the
whole process tree (psutil: the group, and descendants that left it): SIGTERM, then SIGKILL after
a grace period, which frees all of its memory.

Everything about a job lives on disk, under ``WORKSPACE/jobs/JOB_ID/``:
``job.json`` (command, pid, run dir, log; written only by the launcher), ``output.log`` (the
command's stdout and stderr), ``progress.json`` (structured progress, written only by the command
through ``store.Progress``: the supervisor passes its path in ``$SARFT_PROGRESS``), ``exit.json``
(written only by the supervisor when the command ends) and ``cancel.json`` (written only by
:func:`cancel`). One writer per file, so no update is
ever lost. A page reload or a restarted app re-reads these files and re-attaches; a job whose
process is gone without an ``exit.json`` is reported as failed, with its log tail.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil

from sarft_core.errors import SarftError
from sarft_core.store import (FINAL_STATES, PROGRESS_ENV, PROGRESS_FILE, RunDir, atomic_write_json, read_json_object, read_progress,
                              slug, workspace_root)

JOB_STATES = ("starting", "running", "cancelling", "completed", "failed", "cancelled")
JOB_FINAL = ("completed", "failed", "cancelled")
STARTUP_GRACE_S = 30.0
# a live process created this close to a job's start is its supervisor even before it has exec'd
# (a pid recycled within two seconds of the job's start does not happen in practice)
PID_START_SLACK_S = 2.0
_CHILDREN: dict[int, subprocess.Popen] = {}  # supervisors started by this process, reaped on poll


def jobs_root() -> Path:
    path = workspace_root() / "jobs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def command_available(command: str) -> bool:
    """Whether ``python -m sarft_core COMMAND`` exists in this installation."""
    return bool(re.fullmatch(r"[a-z_]+", command)) and importlib.util.find_spec(f"sarft_core.cli.{command}") is not None


def cli_argv(command: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "sarft_core", command, *map(str, args)]


def accelerate_launcher(config_file: str | Path) -> list[str]:
    """``accelerate launch --config_file C -m sarft_core``: the launcher for multi-process jobs."""
    exe = Path(sys.executable).parent / "accelerate"
    head = [str(exe)] if exe.is_file() else [sys.executable, "-m", "accelerate.commands.launch"]
    if exe.is_file():
        head.append("launch")
    return [*head, "--config_file", str(config_file), "-m", "sarft_core"]


def format_command(argv: list[str]) -> str:
    """The command line a user can paste into a shell (``python`` / ``accelerate`` from this venv)."""
    bin_dir = Path(sys.executable).parent
    shown = list(argv)
    if shown and shown[0] == sys.executable:
        shown[0] = "python"
    elif shown and Path(shown[0]).parent == bin_dir:
        shown[0] = Path(shown[0]).name
    return shlex.join(shown)


def _project_root() -> Path:
    from sarft_core.data import PROJECT_ROOT

    return PROJECT_ROOT


@dataclass
class Job:
    path: Path

    @property
    def id(self) -> str:
        return self.path.name

    def meta(self) -> dict:
        """job.json with every field of the type readers expect; a damaged file reads as
        ``{"damaged": True}`` (the job then shows as failed), never as an exception in a page."""
        raw = read_json_object(self.path / "job.json", {})
        if raw is None:
            return {"damaged": True, "label": self.id, "kind": "", "command": "", "argv": [], "created": 0.0}
        return _typed_meta(raw)

    @property
    def log_path(self) -> Path:
        return self.path / "output.log"

    @property
    def command(self) -> str:
        return self.meta().get("command", "")

    @property
    def kind(self) -> str:
        return self.meta().get("kind", "")

    @property
    def run_dir(self) -> RunDir | None:
        p = self.meta().get("run_dir")
        return RunDir(Path(p)) if p else None

    def exit_info(self) -> dict | None:
        path = self.path / "exit.json"
        info = read_json_object(path, None)
        if info is None and path.exists():
            return {"exit_code": None, "damaged": True}  # the command ended; its status is unreadable
        return info

    @property
    def cancel_requested(self) -> bool:
        return (self.path / "cancel.json").exists()

    def state(self) -> str:
        meta = self.meta()
        if meta.get("damaged"):
            return "failed"
        ended = self.exit_info()
        if ended is not None:
            return self._ended_state(ended)
        cancelled = self.cancel_requested
        pid = meta.get("pid")
        if pid is None:
            return "starting" if time.time() - meta.get("created", 0) < STARTUP_GRACE_S else "failed"
        if _alive(pid, meta.get("started")):
            return "cancelling" if cancelled else "running"
        # the supervisor is gone: it may have written exit.json and exited after the first look
        ended = self.exit_info()
        if ended is not None:
            return self._ended_state(ended)
        return "cancelled" if self.cancel_requested else "failed"

    def _ended_state(self, ended: dict) -> str:
        """The state of a job whose supervisor recorded the command's end."""
        if self.cancel_requested:
            return "cancelled"
        if ended.get("exit_code") == 0:
            run = self.run_dir
            run_state = run.status().get("state") if run and run.status_path.exists() else None
            return run_state if run_state in ("failed", "cancelled") else "completed"
        return "failed"

    @property
    def is_active(self) -> bool:
        return self.state() not in JOB_FINAL

    def problem(self) -> str | None:
        """Why a failed job failed, in one line (the log tail says the rest)."""
        if self.state() != "failed":
            return None
        if self.meta().get("damaged"):
            return f"the job's record {self.path / 'job.json'} is damaged (not a JSON object)"
        ended = self.exit_info()
        if ended is None:
            return "the job's process ended without recording an exit status (killed, or the machine restarted)"
        return f"the command exited with status {ended.get('exit_code')}"

    def log_text(self, max_bytes: int = 65536) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - max_bytes))
                data = fh.read()
        except FileNotFoundError:
            return ""
        return data.decode("utf-8", errors="replace")

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self.log_text(), lines)

    def progress_record(self) -> dict | None:
        """The command's structured progress (done, total, unit, phase, fraction, eta_s), from the
        job's own ``progress.json`` only (the supervisor points the command at it). Never the run
        directory's: an evaluation of a training run would show the training's last progress
        ("training · 2/2 step") until its own first report."""
        return read_progress(self.path / PROGRESS_FILE)

    def ended_at(self) -> float | None:
        """When the job ended: its recorded exit, else (killed before recording one) the last
        write to its log or its cancel request; None while it is active."""
        state = self.state()
        if state not in JOB_FINAL:
            return None
        ended = self.exit_info() or {}
        if isinstance(ended.get("ended"), (int, float)):
            return float(ended["ended"])
        cancel = read_json_object(self.path / "cancel.json", None) or {}
        times = [t for t in (cancel.get("requested"),) if isinstance(t, (int, float))]
        with contextlib.suppress(OSError):
            times.append(self.log_path.stat().st_mtime)
        return max(times) if times else None

    def summary(self) -> dict:
        """One row of the job history: what ran, when, for how long, and how it ended."""
        meta, state = self.meta(), self.state()
        started = meta.get("started", meta.get("created"))
        ended = self.ended_at()
        return {"job": self.id, "label": meta.get("label", self.kind), "kind": self.kind, "outcome": state,
                "started": started, "duration_s": (ended - started) if started and ended else None,
                "command": meta.get("command", ""), "problem": self.problem() or ""}

    def progress(self) -> float | None:
        """Fraction done, from the structured progress (None before the command reports any)."""
        record = self.progress_record()
        return None if record is None else record.get("fraction")


_META_TYPES = {
    "id": str, "kind": str, "label": str, "command": str, "log": str, "cwd": str,
    "created": (int, float), "started": (int, float), "pid": int, "pgid": int,
}


def _typed_meta(raw: dict) -> dict:
    """Drop fields of the wrong type (hand-edited or damaged job.json) so readers see only sound ones."""
    out = {}
    for key, value in raw.items():
        want = _META_TYPES.get(key)
        if want is not None and (isinstance(value, bool) or not isinstance(value, want)):
            continue
        if key == "argv" and not (isinstance(value, list) and all(isinstance(a, str) for a in value)):
            continue
        if key == "run_dir" and value is not None and not isinstance(value, str):
            continue
        if key == "env" and not isinstance(value, dict):
            continue
        out[key] = value
    return out


def log_tail(text: str, lines: int = 30) -> str:
    """The last ``lines`` lines as a terminal would show them (progress-bar redraws collapsed)."""
    out = []
    for line in text.splitlines():
        shown = line.split("\r")
        visible = next((s for s in reversed(shown) if s.strip()), "")
        if visible.strip():
            out.append(visible)
    return "\n".join(out[-lines:])


def progress_text(record: dict) -> str:
    """One line for a progress record: ``RDS Jigsaw · 6/10 samples · 60% · about 2 min left``."""
    def number(x) -> str:
        return f"{x:g}" if isinstance(x, (int, float)) else "?"

    bits = [record.get("phase") or ""]
    bits.append(f"{number(record.get('done'))}/{number(record.get('total'))} {record.get('unit') or ''}".strip())
    if record.get("fraction") is not None:
        bits.append(f"{100 * record['fraction']:.0f}%")
    eta = record.get("eta_s")
    if isinstance(eta, (int, float)) and eta > 0:
        bits.append(f"about {eta / 60:.0f} min left" if eta >= 90 else f"about {eta:.0f} s left")
    return " · ".join(b for b in bits if b)


def _running(proc: psutil.Process) -> bool:
    """Whether the process still exists and is not a zombie (an ended, unreaped child)."""
    try:
        return proc.status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # it exists, under another user
        return True


def _alive(pid: int, started: float | None = None) -> bool:
    """Whether ``pid`` is still a running job supervisor (a recycled pid is some other program).

    A supervisor that has just been forked shows its parent's command line until it has exec'd
    (long enough to be seen on a busy machine), so it is recognised by being our own unfinished
    child, or by having been created when the job was started (``started``), not only by its
    command line."""
    proc = _CHILDREN.get(pid)
    if proc is not None:
        if proc.poll() is not None:  # our own child: reap it, no zombie
            _CHILDREN.pop(pid, None)
            return False
        return True
    try:
        process = psutil.Process(pid)
        if not _running(process):
            return False
        if "sarft_core.jobs" in process.cmdline():
            return True
        return started is not None and abs(process.create_time() - started) < PID_START_SLACK_S
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def _tree(pgid: int) -> list[psutil.Process]:
    """The job's live processes: its process group, and the supervisor's descendants even if one
    left the group (its own session)."""
    for pid in list(_CHILDREN):
        _alive(pid)  # reap our finished supervisors so the group can empty
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid:
                found[proc.pid] = proc
        except OSError:  # gone meanwhile, or not ours to ask
            continue
    leader = found.get(pgid)  # the supervisor; a pid is not reused while its group lives
    if leader is not None:
        with contextlib.suppress(psutil.Error):
            found.update((c.pid, c) for c in leader.children(recursive=True))
    return [p for p in found.values() if _running(p)]


def _group_alive(pgid: int) -> bool:
    return bool(_tree(pgid))


def cli_choices(command: str, option: str) -> list[str] | None:
    """The allowed values of one option of a command (None when free-form or unknown): what the
    command line really accepts, for checking it against the registries."""
    if not command_available(command):
        return None
    import argparse

    from sarft_core.cli import build_parser

    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            for a in action.choices[command]._actions:
                if option in a.option_strings and a.choices:
                    return [str(c) for c in a.choices]
    return None


def cli_args(wanted: list[tuple[str, object]]) -> list[str]:
    """Settings as command-line arguments (``(flag, value)`` pairs, as the CLI's own
    :func:`sarft_core.cli._config_args.flag_args` writes them). A flag the command does not know
    is not dropped here: :func:`start` refuses the whole command line with argparse's own words."""
    from sarft_core.cli._config_args import flag_args

    return flag_args(wanted)


def check_command_line(args: list[str]) -> None:
    """Parse ``python -m sarft_core ARGS`` without running it; one SarftError with argparse's
    message if the command would refuse its arguments (an unknown option, a bad choice, a missing
    required option), so a job never starts only to fail on its first line."""
    import contextlib
    import io

    from sarft_core.cli import build_parser

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args([str(a) for a in args])
    except SystemExit as exc:
        if exc.code in (0, None):  # --help / --version: nothing wrong
            return
        lines = [line for line in err.getvalue().splitlines() if "error:" in line]
        why = lines[-1].split("error:", 1)[1].strip() if lines else "its arguments were refused"
        raise SarftError(f"`python -m sarft_core {args[0]}` would refuse this command line: {why}",
                         f"see `python -m sarft_core {args[0]} --help` for the options it takes") from None


_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH", re.IGNORECASE)


def redact(name: str, value) -> str:
    """An environment value as job.json may record it: secrets by name only, never their value."""
    return "<set, not recorded>" if _SECRET_NAME.search(name) else str(value)


def start(args: list[str], kind: str | None = None, run_dir: str | Path | None = None, label: str | None = None,
          env: dict | None = None, launcher: list[str] | None = None) -> Job:
    """Start ``python -m sarft_core ARGS...`` in the background and return its job.

    ``launcher`` replaces ``python -m sarft_core`` (e.g. ``accelerate launch --config_file C.yaml
    -m sarft_core``), so multi-process launches stay one job with one process group.
    """
    if not args:
        raise SarftError("no command given", "name a sarft_core command, e.g. score")
    command = args[0]
    if not command_available(command):
        raise SarftError(f"unknown command `python -m sarft_core {command}`",
                         "use one of the commands `python -m sarft_core --help` lists")
    check_command_line(args)
    argv = [*launcher, *map(str, args)] if launcher else cli_argv(*args)
    kind = kind or command
    job_dir = jobs_root() / f"{time.strftime('%Y%m%d-%H%M%S')}-{slug(kind, keep='', limit=None, default='job', lower=True)}-{uuid.uuid4().hex[:6]}"
    job_dir.mkdir(parents=True)
    meta = {
        "id": job_dir.name, "kind": kind, "label": label or kind, "argv": argv, "command": format_command(argv),
        "run_dir": str(run_dir) if run_dir else None, "log": str(job_dir / "output.log"),
        "cwd": str(_project_root()), "created": time.time(), "env": {k: redact(k, v) for k, v in (env or {}).items()},
    }
    atomic_write_json(job_dir / "job.json", meta)
    child_env = dict(os.environ, **{k: str(v) for k, v in (env or {}).items()}, PYTHONUNBUFFERED="1")
    root = str(_project_root())
    child_env["PYTHONPATH"] = root + (os.pathsep + child_env["PYTHONPATH"] if child_env.get("PYTHONPATH") else "")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sarft_core.jobs", "supervise", str(job_dir)],
        cwd=root, env=child_env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: cancel reaches every descendant
    )
    _CHILDREN[proc.pid] = proc
    meta.update(pid=proc.pid, pgid=proc.pid, started=time.time())
    atomic_write_json(job_dir / "job.json", meta)
    return Job(job_dir)


def cancel(job: Job, grace_s: float = 10.0) -> str:
    """Stop the job's whole process tree: SIGTERM, then SIGKILL after ``grace_s`` seconds."""
    meta = job.meta()
    if not job.is_active:
        return job.state()
    atomic_write_json(job.path / "cancel.json", {"requested": time.time()})
    pgid = meta.get("pgid") or meta.get("pid")
    if pgid:
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.time() + grace_s
        while time.time() < deadline and _group_alive(pgid):
            time.sleep(0.1)
        if _group_alive(pgid):
            _signal_group(pgid, signal.SIGKILL)
            deadline = time.time() + 5
            while time.time() < deadline and _group_alive(pgid):
                time.sleep(0.05)
    run = job.run_dir
    if run is not None and run.status_path.exists() and run.status().get("state") not in FINAL_STATES:
        run.set_status("cancelled", reason="cancelled from the dashboard")
    return job.state()


def _signal_group(pgid: int, sig) -> None:
    """Send ``sig`` to the job's whole process tree (the group, and descendants that left it)."""
    for proc in _tree(pgid):
        with contextlib.suppress(psutil.Error):  # psutil checks the pid was not reused
            proc.send_signal(sig)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def list_jobs(kind: str | None = None) -> list[Job]:
    """Every job on disk, newest first (optionally of one kind)."""
    jobs = [Job(p.parent) for p in jobs_root().glob("*/job.json")]
    if kind:
        jobs = [j for j in jobs if j.kind == kind]
    return sorted(jobs, key=lambda j: j.meta().get("created", 0), reverse=True)


def history(kind: str | None = None, limit: int = 20) -> list[dict]:
    """The finished jobs (completed, failed, cancelled), newest first, as :meth:`Job.summary` rows:
    read from the job store on disk, so a cancelled or failed job stays visible after a reload."""
    rows = []
    for job in list_jobs(kind):
        if job.state() in JOB_FINAL:
            rows.append(job.summary())
            if len(rows) >= limit:
                break
    return rows


def format_duration(seconds: float | None) -> str:
    """``42 s``, ``3 min 5 s``, ``2 h 4 min``; empty when unknown."""
    if not isinstance(seconds, (int, float)) or seconds < 0:
        return ""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def jobs_for_run(run_dir: str | Path) -> list[Job]:
    target = str(Path(run_dir))
    return [j for j in list_jobs() if j.meta().get("run_dir") == target]


def wait(job: Job, timeout_s: float = 60.0, poll_s: float = 0.1) -> str:
    """Block until the job ends (or the timeout passes); return its state."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        state = job.state()
        if state in JOB_FINAL:
            return state
        time.sleep(poll_s)
    return job.state()


def supervise(job_dir: Path) -> int:
    """Run the job's command, wait for it and record its exit code (the supervisor process)."""
    job = Job(Path(job_dir))
    meta = job.meta()
    with open(job.log_path, "ab", buffering=0) as log:
        log.write(f"$ {meta.get('command', '')}\n".encode())
        try:
            child = subprocess.Popen(meta.get("argv") or [""], cwd=meta.get("cwd"), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, **{PROGRESS_ENV: str(job.path / PROGRESS_FILE)}))
        except OSError as exc:
            log.write(f"could not start the command: {exc}\n".encode())
            atomic_write_json(job.path / "exit.json", {"exit_code": 127, "ended": time.time()})
            return 127

        def forward(signum, _frame):
            # the group signal reaches the child too; forwarding covers a signal sent to us alone
            try:
                child.send_signal(signum)
            except ProcessLookupError:
                pass

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
        atomic_write_json(job.path / "child.json", {"pid": child.pid})
        code = child.wait()
        log.write(f"\n[exit status {code}]\n".encode())
    run = job.run_dir
    if run is not None and run.status_path.exists() and run.status().get("state") not in FINAL_STATES:
        state = "completed" if code == 0 else ("cancelled" if job.cancel_requested else "failed")
        run.set_status(state, exit_code=code)
    atomic_write_json(job.path / "exit.json", {"exit_code": code, "ended": time.time()})
    return code


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "supervise":
        sys.exit(supervise(Path(sys.argv[2])))
    print("usage: python -m sarft_core.jobs supervise JOB_DIR", file=sys.stderr)
    sys.exit(2)
