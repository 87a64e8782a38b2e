"""Start the test world's ComfyUI server by hand: ``python -m tests.comfy [--port 8188]``.

Run from the repository root. It builds the cached environment if needed, starts the same server
the server-tier tests use (real ComfyUI 0.3.75 on CPU, charpack's node pack, the stand-ins, the
tiny models), prints its URL and runs until Ctrl-C, which stops it cleanly.
"""

from __future__ import annotations

import argparse
import logging
import signal
import tempfile
from pathlib import Path

from tests.comfy.frontend import ensure_frontend
from tests.comfy.server import start_server


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.comfy", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    parser.add_argument(
        "--base-dir", type=Path, default=None,
        help="ComfyUI --base-directory to use or reuse (default: a new temporary folder)",
    )  # fmt: skip
    parser.add_argument("--cache-none", action="store_true", help="run ComfyUI with --cache-none")
    parser.add_argument(
        "--step-seconds", type=float, default=0.0,
        help="seconds each stand-in sampler step takes (default 0: as fast as possible)",
    )  # fmt: skip
    parser.add_argument(
        "--editor", action="store_true",
        help="serve the real graph editor (frontend 1.32.9, installed into the cache on first use)",
    )  # fmt: skip
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    base = args.base_dir or Path(tempfile.mkdtemp(prefix="charpack-comfy-"))
    base.mkdir(parents=True, exist_ok=True)
    extra = ("--cache-none",) if args.cache_none else ()
    frontend = ensure_frontend() if args.editor else None
    server = start_server(
        base, port=args.port, extra_args=extra, standin_step_seconds=args.step_seconds,
        frontend=frontend,
    )  # fmt: skip
    print(f"ComfyUI 0.3.75 (CPU, stand-ins) at {server.url}", flush=True)
    print(f"base directory {base}; log {server.log_path}; Ctrl-C stops it", flush=True)
    # `kill` (SIGTERM) stops the server too, as Ctrl-C does, instead of orphaning ComfyUI.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        assert server.proc is not None
        rc = server.proc.wait()
        print(f"the server exited by itself with code {rc}; see {server.log_path}")
    except KeyboardInterrupt:
        print("stopping ...", flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
