"""Running a survey: the pending roles in this process, local workers, SLURM jobs."""
from __future__ import annotations


import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable
from sarft_core.errors import SarftError
from sarft_core.store import Progress, atomic_write_json
from sarft_core.survey.aggregate import _obj
from sarft_core.survey.config import RoleLock, Survey
from sarft_core.survey.steps import ModelHolder, RoleContext, Steps, run_role



def _signed(value) -> str:
    return f"{value:+.2f}" if isinstance(value, (int, float)) and value == value else "n/a"


def role_line(result: dict, index: int | None = None, total: int | None = None) -> str:
    head = f"[{index}/{total}] " if index and total else ""
    s = _obj(result.get("score"))
    bits = []
    if s:
        bits.append(f"{s['samples']} samples, {100 * s['flagged_fraction']:.1f}% flagged")
        counts = _obj(s.get("verdicts"))
        if counts:
            bits.append(f"with 95% confidence {counts.get('flagged', 0)} flagged, {counts.get('uncertain', 0)} uncertain")
        v = _obj(s.get("validation"))
        if v:
            bits.append(f"validation Spearman {_signed(v.get('spearman'))} [{_signed(v.get('spearman_ci_low'))}, {_signed(v.get('spearman_ci_high'))}]")
    for m, e in _obj(result.get("methods")).items():
        ev = _obj(_obj(e).get("eval"))
        if ev:
            bits.append(f"{m}: " + ", ".join(f"{k} {v:.3g}" for k, v in ev.items()))
    if result.get("errors"):
        bits.append(f"{len(result['errors'])} step(s) failed: {result['errors'][0][:160]}")
    return f"{head}{result['role']}: " + "; ".join(bits) + f" ({result['seconds']:.1f} s)"


def run_pending(
    survey: Survey,
    steps: Steps | None = None,
    show_progress: bool = True,
    on_role_done: Callable[[dict], None] | None = None,
    echo: Callable[[str], None] | None = None,
) -> list[dict]:
    """Work through the survey's unfinished roles in this process; returns the results it wrote.

    Roles finished (by anyone, from the roles' current content) are skipped; roles claimed by
    another live process are left to it first, then waited for.
    """
    steps = steps or Steps()
    echo = echo or (lambda line: print(line, file=sys.stderr, flush=True))
    cfg = survey.config
    holder = ModelHolder(cfg.model, cfg.device)
    roles = cfg.roles
    report = Progress(survey.path, unit="role", phase="survey")
    report(len(roles) - len(survey.pending()), len(roles))
    bar = None
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(total=len(roles), initial=len(roles) - len(survey.pending()), desc="survey", unit="role", file=sys.stderr)
    written = []

    def work(role: str, wait: bool) -> bool:
        """Run one role unless it is finished; False when another process holds it (``wait``: wait
        for that process, then take the role over if it did not finish it)."""
        if survey.is_done(role):
            return True
        lock = RoleLock(survey.lock_path(role))
        if not lock.acquire(wait=wait):
            return False
        try:
            if survey.is_done(role):  # finished by the holder while we waited
                return True
            result = _run_one(survey, role, holder, steps, show_progress)
            atomic_write_json(survey.result_path(role), result)
            survey.run.log(event="role", role=role, status=result["status"], seconds=result["seconds"], errors=result["errors"])
            written.append(result)
            done = len(roles) - len(survey.pending())
            line = role_line(result, done, len(roles))
            report(done, len(roles))
            if bar is not None:
                bar.write(line, file=sys.stderr)
                bar.n = done
                bar.refresh()
            else:
                echo(line)
            if on_role_done:
                on_role_done(result)
            return True
        finally:
            lock.release()

    try:
        busy = [role for role in roles if not work(role, wait=False)]
        # roles another process holds: theirs to finish, and finished they are ours to report
        # (a survey that exits before them would call them "not finished")
        for role in busy:
            work(role, wait=True)
    finally:
        if bar is not None:
            bar.close()
    return written


def _run_one(survey: Survey, role: str, holder, steps: Steps, show_progress: bool) -> dict:
    """One role's result, stamped with the key of the content it was computed from."""
    cfg = survey.config
    try:
        profile, samples = survey.role_inputs(role)
    except SarftError as exc:  # e.g. no samples for this role: record it, go on with the others
        now = time.time()
        return {"role": role, "mode": cfg.mode, "started": now, "finished": now, "seconds": 0.0,
                "errors": [f"data: {exc}"], "status": "failed"}
    ctx = RoleContext(survey, role, profile, samples, survey.role_dir(role), holder, show_progress)
    return dict(run_role(ctx, steps), key=survey.role_key(role, (profile, samples)))


# ---------------------------------------------------------------- several processes
def run_workers(survey: Survey, worker_argv: list[str], workers: int, poll_s: float = 1.0, show_progress: bool = True) -> int:
    """Spread the pending roles over ``workers`` local subprocesses (each `python -m sarft_core
    survey ... --worker`), showing overall progress from the result files. Returns failed workers."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    procs = [subprocess.Popen([sys.executable, "-m", "sarft_core", *worker_argv], env=env) for _ in range(workers)]
    total = len(survey.config.roles)
    report = Progress(survey.path, unit="role", phase=f"survey ({workers} workers)")
    report(total - len(survey.pending()), total)
    bar = None
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=total - len(survey.pending()), desc=f"survey ({workers} workers)", unit="role", file=sys.stderr)
    try:
        while any(p.poll() is None for p in procs):
            time.sleep(poll_s)
            report(total - len(survey.pending()), total)
            if bar is not None:
                bar.n = total - len(survey.pending())
                bar.refresh()
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        raise
    finally:
        if bar is not None:
            bar.n = total - len(survey.pending())
            bar.close()
    return sum(1 for p in procs if p.returncode != 0)


def submit_slurm(survey: Survey, role_argv: Callable[[str], list[str]], options: dict, entry: Callable[[list[str]], int]) -> list[str]:
    """Submit one SLURM job per pending role through submitit (imported only here); each job calls
    ``entry(role_argv(role))`` (the survey command's entry point, a module-level function)."""
    import shutil

    cluster = options.pop("cluster", None)  # only tests name one (submitit's local / debug executors)
    if cluster is None and shutil.which("sbatch") is None:
        # submitit would silently fall back to local processes and report them as submitted jobs
        raise SarftError("--slurm asked for, but SLURM is not available on this machine (no sbatch command)",
                         "run on the cluster's login node, or drop --slurm (use --workers N for local processes)")
    try:
        import submitit
    except ImportError:
        raise SarftError("--slurm needs the submitit package", "pip install submitit (on the cluster's login node)") from None
    folder = survey.path / "slurm" / "%j"
    executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    if cluster is None and executor.cluster != "slurm":
        raise SarftError(f"--slurm asked for, but submitit found no SLURM cluster (it would run the jobs {executor.cluster}ly)",
                         "run on the cluster's login node, or drop --slurm (use --workers N for local processes)")
    executor.update_parameters(**{k: v for k, v in options.items() if v is not None})
    jobs = []
    pending = survey.pending()
    with executor.batch():
        for role in pending:
            jobs.append(executor.submit(entry, role_argv(role)))
    ids = [j.job_id for j in jobs]
    survey.run.log(event="slurm", roles=pending, jobs=ids)
    return ids
