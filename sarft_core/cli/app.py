"""`app`: start the dashboard (Streamlit), bound to localhost by default."""
from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys

from sarft_core.errors import SarftError


def register(subparsers) -> None:
    p = subparsers.add_parser("app", help="start the safety-audit dashboard in the browser", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--port", type=int, default=8501, help="port to serve on")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 exposes it to the network: only behind a proxy with authentication)")
    p.add_argument("--model", default=os.environ.get("SARFT_MODEL", ""), help="model the dashboard scores with (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--workspace", default=None, help="folder for runs and jobs (default: $SARFT_WORKSPACE or ./workspace)")
    p.set_defaults(func=run)


def streamlit_command(port: int, host: str) -> list[str]:
    from sarft_core.data import PROJECT_ROOT

    main = PROJECT_ROOT / "app" / "main.py"
    if not main.is_file():
        raise SarftError(f"the dashboard is not part of this installation ({main} is missing)", "run from a checkout of the SaRFT Studio repository")
    if not 0 < port < 65536:
        raise SarftError(f"port {port} is out of range", "use a port between 1024 and 65535")
    return [
        sys.executable, "-m", "streamlit", "run", str(main),
        "--server.port", str(port), "--server.address", host, "--server.headless", "true",
        "--browser.gatherUsageStats", "false", "--global.developmentMode", "false", "--client.toolbarMode", "viewer",
    ]


def run(args) -> int:
    from sarft_core.data import PROJECT_ROOT

    cmd = streamlit_command(args.port, args.host)
    if not args.workspace and os.environ.get("SARFT_WORKSPACE"):
        from sarft_core.store import workspace_root

        workspace_root()  # a SARFT_WORKSPACE that is a file fails here, clearly, not inside the browser
    env = dict(os.environ)
    if args.model:
        env["SARFT_MODEL"] = args.model
    if args.workspace:
        from sarft_core.store import ensure_dir

        ensure_dir(os.path.abspath(os.path.expanduser(args.workspace)), "the workspace (--workspace)")
        env["SARFT_WORKSPACE"] = os.path.abspath(os.path.expanduser(args.workspace))
    env["PYTHONPATH"] = str(PROJECT_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    print(f"SaRFT Studio on http://{args.host}:{args.port}  (Ctrl+C stops it)", file=sys.stderr)
    return serve(cmd, cwd=str(PROJECT_ROOT), env=env)


class _Stop(Exception):
    pass


def _raise_stop(signum, _frame):
    raise _Stop(signum)


def _die_with_parent() -> None:
    """In the server's process, before exec: the kernel sends it SIGTERM when this command dies,
    even by SIGKILL, so no server is left answering on the port (Linux; elsewhere a no-op)."""
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
    except (OSError, AttributeError):
        pass


def _server_tree(proc: subprocess.Popen) -> list:
    """The server and its descendants in its process group; background jobs, in sessions of their
    own, are left out: they outlive the app and are re-attached by the next one."""
    import psutil

    try:
        server = psutil.Process(proc.pid)
        group = os.getpgid(proc.pid)
        tree = [server] + server.children(recursive=True)
    except (psutil.Error, OSError):
        return []
    out = []
    for p in tree:
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(p.pid) == group:
                out.append(p)
    return out


def stop_server(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM to the server's tree, SIGKILL to what is left after ``grace_s``."""
    import psutil

    tree = _server_tree(proc)
    for p in tree:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(tree, timeout=grace_s)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=5)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=1)  # reap it


def serve(cmd: list[str], cwd: str, env: dict) -> int:
    """Run the server until it ends, or until this command is told to stop (SIGTERM, SIGHUP,
    Ctrl+C): then the server's process tree stops with it. A signal to this command alone
    (``kill PID``, a service manager) used to end the parent only, and the orphaned server went on
    answering on the port."""
    import signal

    handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {sig: signal.signal(sig, _raise_stop) for sig in handled}
    proc = None
    try:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, preexec_fn=_die_with_parent)
        return proc.wait()
    except (_Stop, KeyboardInterrupt):
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if proc is not None and proc.poll() is None:
            stop_server(proc)
