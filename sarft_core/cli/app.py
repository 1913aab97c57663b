"""`app`: start the dashboard (Streamlit), bound to localhost by default."""
from __future__ import annotations

import argparse
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
    try:
        return subprocess.call(cmd, cwd=str(PROJECT_ROOT), env=env)
    except KeyboardInterrupt:
        return 0
