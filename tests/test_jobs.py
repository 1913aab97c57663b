"""Background jobs: real `python -m sarft_core` subprocesses, started, watched, cancelled, re-attached."""
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sarft_core import audit, jobs
from sarft_core.data import DEMO_PROFILES, get_profile, load_profiles
from sarft_core.errors import SarftError
from sarft_core.store import RunDir, read_json


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    monkeypatch.setenv("SARFT_WORKSPACE", str(tmp_path / "ws"))
    return tmp_path / "ws"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def group_pids(pgid: int) -> list[int]:
    import psutil

    out = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                out.append(proc.pid)
        except OSError:
            continue
    return out


def test_pure_helpers():
    assert jobs.command_available("score") and jobs.command_available("app")
    assert not jobs.command_available("no_such_command") and not jobs.command_available("../x")
    assert jobs.format_command(jobs.cli_argv("score", "--role", "Baron Vex Morrow")) == "python -m sarft_core score --role 'Baron Vex Morrow'"
    assert jobs.log_tail("a\nbar 10%\rbar 50%\rbar 90%\n\nz\n", 2) == "bar 90%\nz"
    assert jobs.progress_text({"phase": "RDS x", "done": 6, "total": 10, "unit": "sample", "fraction": 0.6, "eta_s": 30}) \
        == "RDS x · 6/10 sample · 60% · about 30 s left"
    assert jobs.cli_choices("no_such_command", "--x") is None
    assert jobs.cli_choices("score", "--normalise") == ["mean", "sum"]


def test_progress_is_structured_throttled_and_atomic(tmp_path, monkeypatch):
    from sarft_core import store

    monkeypatch.setattr(store, "_job_progress", [tmp_path / "job" / "progress.json"])
    report = store.Progress(tmp_path / "run", unit="step", phase="training", every_s=3600)
    report(0, 8)
    first = store.read_progress(tmp_path / "run")
    assert first["done"] == 0 and first["total"] == 8 and first["fraction"] == 0 and first["phase"] == "training"
    report(3, 8)  # within the interval: not written (at most one write per every_s)
    assert store.read_progress(tmp_path / "run")["done"] == 0
    report(8, 8)  # the end is always written
    for where in (tmp_path / "run", tmp_path / "job" / "progress.json"):  # the run's and the job's file
        assert store.read_progress(where)["fraction"] == 1.0
    assert not list(tmp_path.rglob("*.tmp"))
    fast = store.Progress(tmp_path / "eta", unit="item", every_s=0)
    fast(0, 100)
    time.sleep(0.05)
    fast(10, 100)
    eta = store.read_progress(tmp_path / "eta")["eta_s"]
    assert eta is not None and eta > 0
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "progress.json").write_text('{"done": "lots", "total": 3}')
    assert store.read_progress(tmp_path / "bad") is None and store.read_progress(tmp_path / "none") is None


def test_a_jobs_progress_file_is_not_passed_on_to_the_commands_it_starts(tmp_path):
    """The supervisor points the command at the job's progress.json; the command takes the
    variable out of its environment, so a survey's inner `train` cannot write over it."""
    code = ("import os, sys; from sarft_core import store; store.take_progress_target(); "
            "print(os.environ.get('SARFT_PROGRESS'), [str(p) for p in store._job_progress])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, SARFT_PROGRESS=str(tmp_path / "p.json"), PYTHONPATH=str(Path(__file__).parents[1])))
    assert out.stdout.strip() == f"None ['{tmp_path / 'p.json'}']"


def test_a_supervisor_not_yet_execd_is_running_not_failed(workspace, tmp_path, monkeypatch):
    """Regression (seen once on a loaded machine: a judge job read as failed right after start):
    between fork and exec a new supervisor still shows its parent's command line, which the
    liveness check took for a recycled pid. Our own child, or a process created when the job
    started, is now recognised as the supervisor whatever its command line says."""
    import psutil

    job = jobs.start(["score", "--role", "x", "--out", str(tmp_path / "s.jsonl")], label="slow start",
                     launcher=[sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        monkeypatch.setattr(psutil.Process, "cmdline", lambda self: [sys.executable, "-m", "pytest"])  # the pre-exec view
        assert job.state() == "running"  # seen by the process that started it
        monkeypatch.setattr(jobs, "_CHILDREN", {})  # seen from another process (the dashboard restarted)
        assert job.state() == "running"
        meta = job.meta()
        assert not jobs._alive(meta["pid"], started=meta["started"] - 3600)  # an old pid with another program: not ours
    finally:
        monkeypatch.undo()
        jobs.cancel(job, grace_s=5)


def test_unknown_command_is_a_clear_error(workspace):
    with pytest.raises(SarftError, match="unknown command"):
        jobs.start(["no_such_command"])


def test_a_command_line_the_command_would_refuse_is_refused_before_any_job_starts(workspace):
    """Regression: the pages dropped options the CLI did not know with a warning (a misspelt
    --lambda would have trained with the default λ and been labelled with the chosen one); now a
    command line is parsed before its job starts, and a refused one is one error, no job."""
    before = set(jobs.jobs_root().iterdir())
    for args, why in ((["train", "--method", "sarft", "--lamda", "0.1", "--out", "o"], "unrecognized arguments: --lamda"),
                      (["train", "--method", "nonsense", "--out", "o"], "invalid choice: 'nonsense'"),
                      (["score", "--out", "o.jsonl"], "the following arguments are required: --role")):
        with pytest.raises(SarftError, match=why) as err:
            jobs.start(args)
        assert "--help" in err.value.fix
    assert set(jobs.jobs_root().iterdir()) == before  # nothing was started
    assert jobs.cli_args([("--lambda", 0.5), ("--limit", None), ("--dry-run", True), ("--exact", False)]) == ["--lambda", "0.5", "--dry-run"]


def test_score_job_completes_and_writes_the_run(workspace, tiny_model_dir):
    profile = get_profile(load_profiles(DEMO_PROFILES), "Sister Alma Reyes")
    run = audit.create_score_run(profile, None, str(tiny_model_dir), limit=4)
    run.set_status("running")
    job = jobs.start(audit.score_args(run), kind="score", run_dir=run.path, label="test score")
    assert job.command.startswith("python -m sarft_core score --role 'Sister Alma Reyes'")
    assert job.state() in ("starting", "running")
    assert jobs.wait(job, timeout_s=120) == "completed", job.log_tail()
    scores = audit.load_scores(run)
    assert len(scores) == 4 and set(audit.load_token_ratios(run)) == set(scores["id"])
    assert run.status()["state"] == "completed"  # the supervisor finalised the run
    assert read_json(job.path / "exit.json")["exit_code"] == 0
    assert "4 samples" in job.log_tail() and job.progress() == pytest.approx(1.0)
    record = job.progress_record()  # structured, from the job's progress.json (not parsed from the log)
    assert (job.path / "progress.json").is_file()
    assert record["done"] == record["total"] == 4 and record["unit"] == "sample" and record["phase"] == "RDS Sister Alma Reyes"
    assert jobs.jobs_for_run(run.path)[0].id == job.id


def test_failed_job_shows_why_and_its_log_tail(workspace, tiny_model_dir):
    run = RunDir(workspace / "runs" / "bad")
    run.path.mkdir(parents=True)
    run.set_status("running")
    job = jobs.start(["score", "--role", "Nobody At All", "--model", str(tiny_model_dir), "--out", str(run.path / "s.parquet")],
                     run_dir=run.path)
    assert jobs.wait(job, timeout_s=120) == "failed"
    assert "exited with status 2" in job.problem()
    assert "unknown role 'Nobody At All'" in job.log_tail()
    assert "Traceback" not in job.log_tail()
    assert run.status()["state"] == "failed"


def test_cancel_stops_the_whole_process_tree(workspace):
    port = free_port()
    job = jobs.start(["app", "--port", str(port)], label="app server")  # sarft_core -> streamlit: a tree
    pgid = job.meta()["pgid"]
    deadline = time.time() + 90
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.3)
    else:
        pytest.fail("the app never listened: " + job.log_tail())
    assert len(group_pids(pgid)) >= 3  # supervisor, python -m sarft_core app, streamlit
    assert job.state() == "running"
    assert jobs.cancel(job, grace_s=10) == "cancelled"
    assert group_pids(pgid) == []
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
    assert jobs.cancel(job) == "cancelled"  # idempotent


def test_cancel_also_stops_a_descendant_that_left_the_process_group(workspace, tmp_path):
    """A grandchild in its own session escapes a group signal; cancel walks the process tree too."""
    import psutil

    pid_file = tmp_path / "escaped.pid"
    code = ("import subprocess, sys, time; "
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], start_new_session=True); "
            f"open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(120)")
    job = jobs.start(["score", "--role", "x", "--out", str(tmp_path / "s.jsonl")], label="escaping tree",
                     launcher=[sys.executable, "-c", code])  # the launcher ignores the (valid) command line
    deadline = time.time() + 30
    while time.time() < deadline and not (pid_file.is_file() and pid_file.read_text()):
        time.sleep(0.1)
    escaped = psutil.Process(int(pid_file.read_text()))
    assert os.getpgid(escaped.pid) != job.meta()["pgid"]  # really outside the job's group
    assert jobs.cancel(job, grace_s=5) == "cancelled"
    escaped.wait(timeout=10)  # raises psutil.TimeoutExpired if it survived
    assert not escaped.is_running()


def test_reattach_after_restart_and_dead_process_without_status(workspace):
    """State comes from disk: a fresh Job object (as after an app restart) sees what happened."""
    job_dir = jobs.jobs_root() / "orphan"
    job_dir.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (job_dir / "job.json").write_text(json.dumps({"id": "orphan", "kind": "train", "command": "python -m sarft_core train",
                                                  "pid": dead.pid, "pgid": dead.pid, "created": time.time()}))
    (job_dir / "output.log").write_text("step 1\nstep 2\nKilled\n")
    job = next(j for j in jobs.list_jobs() if j.id == "orphan")
    assert job.state() == "failed"
    assert "without recording an exit status" in job.problem()
    assert job.log_tail().endswith("Killed")
    # a pid reused by another program is not mistaken for the job
    (job_dir / "job.json").write_text(json.dumps({"id": "orphan", "pid": os.getpid(), "created": time.time()}))
    assert job.state() == "failed"


def test_a_job_that_ends_between_the_two_looks_is_completed_not_failed(workspace, monkeypatch):
    """Regression (seen once in the crash test, under load): state() read 'no exit.json yet', then
    found the supervisor gone because it had just written exit.json (code 0) and exited, and
    called the job failed. A job whose supervisor is gone is looked at again before it is failed."""
    job_dir = jobs.jobs_root() / "racing"
    job_dir.mkdir(parents=True)
    (job_dir / "job.json").write_text(json.dumps({"id": "racing", "kind": "score", "command": "python -m sarft_core score",
                                                  "pid": 999_999_999, "pgid": 999_999_999, "created": time.time()}))
    job = jobs.Job(job_dir)

    def supervisor_finishes_now(pid, started=None):  # what the supervisor does between state()'s two reads
        (job_dir / "exit.json").write_text(json.dumps({"exit_code": 0, "ended": time.time()}))
        return False

    monkeypatch.setattr(jobs, "_alive", supervisor_finishes_now)
    assert job.state() == "completed"
    (job_dir / "exit.json").unlink()
    monkeypatch.setattr(jobs, "_alive", lambda pid, started=None: False)  # gone without a word: failed, as before
    assert job.state() == "failed"


def _quick_job(tmp_path, code: str, **kw) -> jobs.Job:
    """A job whose process is ``python -c CODE`` (a valid score command line, ignored by the launcher)."""
    return jobs.start(["score", "--role", "x", "--out", str(tmp_path / "s.jsonl")], launcher=[sys.executable, "-c", code], **kw)


def test_a_jobs_progress_comes_from_that_job_only(workspace, tmp_path):
    """Issue #28: an evaluation job of a training run showed the training's last progress
    ("training · 2/2 step") until its own first report: the run folder's progress.json is not the job's."""
    from sarft_core.store import PROGRESS_FILE, atomic_write_json

    run = tmp_path / "train-run"
    run.mkdir()
    atomic_write_json(run / PROGRESS_FILE, {"done": 2, "total": 2, "unit": "step", "phase": "training", "fraction": 1.0, "updated": time.time()})
    job = _quick_job(tmp_path, "import time; time.sleep(60)", kind="eval", run_dir=run, label="eval of a trained run")
    try:
        assert job.progress_record() is None and job.progress() is None  # nothing reported by this job yet
        atomic_write_json(job.path / PROGRESS_FILE, {"done": 1, "total": 4, "unit": "prompts", "phase": "margin", "fraction": 0.25})
        assert job.progress_record()["phase"] == "margin" and job.progress() == pytest.approx(0.25)
    finally:
        jobs.cancel(job, grace_s=5)


def test_finished_failed_and_cancelled_jobs_stay_in_the_history(workspace, tmp_path):
    """Issue #28: a cancelled job vanished without a word. The history, read from the job store,
    keeps each ended job with its command, duration and outcome; running jobs are not in it."""
    done = _quick_job(tmp_path, "import time; time.sleep(0.3)", kind="eval", label="ok")
    failed = _quick_job(tmp_path, "import sys; sys.exit(3)", kind="eval", label="broken")
    assert jobs.wait(done, 30) == "completed" and jobs.wait(failed, 30) == "failed"
    cancelled = _quick_job(tmp_path, "import time; time.sleep(60)", kind="eval", label="stopped")
    running = _quick_job(tmp_path, "import time; time.sleep(60)", kind="eval", label="still running")
    try:
        time.sleep(0.5)
        assert jobs.cancel(cancelled, grace_s=5) == "cancelled"
        rows = {r["label"]: r for r in jobs.history("eval")}
        assert set(rows) == {"ok", "broken", "stopped"}
        assert [r["label"] for r in jobs.history("eval")][0] == "stopped"  # newest first
        assert {k: rows[k]["outcome"] for k in rows} == {"ok": "completed", "broken": "failed", "stopped": "cancelled"}
        for row in rows.values():
            assert row["command"].startswith("python -c") and row["duration_s"] is not None and row["duration_s"] >= 0
        assert rows["ok"]["duration_s"] >= 0.3 and rows["stopped"]["duration_s"] >= 0.5
        assert "status 3" in rows["broken"]["problem"]
        assert jobs.history("train") == [] and len(jobs.history("eval", limit=2)) == 2
    finally:
        jobs.cancel(running, grace_s=5)
    assert jobs.format_duration(42.2) == "42 s" and jobs.format_duration(185) == "3 min 5 s" and jobs.format_duration(None) == ""


def test_sigterm_to_the_app_command_stops_the_server_and_frees_the_port(tmp_path):
    """Issue #28: SIGTERM to `python -m sarft_core app` ended the parent only, and the Streamlit
    child went on answering on the port. The signal goes to that one pid, as `kill PID` sends it."""
    import psutil

    port = free_port()
    env = dict(os.environ, SARFT_WORKSPACE=str(tmp_path / "ws"))
    proc = subprocess.Popen([sys.executable, "-m", "sarft_core", "app", "--port", str(port)], cwd=Path(__file__).resolve().parents[1],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 45
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None, "the app exited before serving"
            time.sleep(0.2)
        else:
            pytest.fail("the app never listened")
        tree = psutil.Process(proc.pid).children(recursive=True)
        assert tree  # the streamlit server
        proc.send_signal(15)
        code = proc.wait(timeout=20)
        gone, alive = psutil.wait_procs(tree, timeout=15)
        assert not alive, [p.cmdline() for p in alive]
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0
        assert code == 0  # a requested stop, not a crash
    finally:
        with __import__("contextlib").suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        for child in psutil.process_iter():  # a server left behind by a failure must not outlive the test
            with __import__("contextlib").suppress(psutil.Error):
                if str(port) in child.cmdline() and "streamlit" in " ".join(child.cmdline()):
                    child.kill()
