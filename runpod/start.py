#!/usr/bin/env python3
"""Start charpack's ComfyUI on a pod: nginx with the token in front, ComfyUI on loopback only.

    CHARPACK_COMFY_TOKEN=... python3 runpod/start.py [--provision] [--root /workspace]

Refuses to start without a strong token (ComfyUI is never exposed without auth). Renders the
nginx config from nginx.conf.template into a private run folder, starts nginx on the public
port, optionally provisions the volume first (runpod/provision.py), starts ComfyUI on
127.0.0.1, and supervises both until a signal or until one of them exits. Logs go to the
volume (<root>/logs/): nginx.log (token redacted), comfyui.log, provision.log.
``/charpack/health`` answers 503 with the current phase until ComfyUI is up, then 200.
With ``--upstream HOST:PORT`` it fronts an already running ComfyUI instead of starting one.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from provision_manifest import PodManifestError, load_manifest

HERE = Path(__file__).resolve().parent
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{32,256}$")
TOKEN_HELP = (
    "set CHARPACK_COMFY_TOKEN to a random token of 32+ characters from A-Z a-z 0-9 _ - "
    "(e.g. `python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--manifest", type=Path, default=HERE / "manifest.toml")
    p.add_argument("--root", type=Path, default=Path("/workspace"))
    p.add_argument("--listen", default="", help="nginx address (default 0.0.0.0:<public_port>)")
    p.add_argument("--upstream", default="", help="front this ComfyUI (host:port), start none")
    p.add_argument("--run-dir", type=Path, default=Path("/run/charpack"))
    p.add_argument(
        "--nginx-user", default="nobody nogroup", help="user for nginx workers when started as root"
    )
    p.add_argument("--no-install-nginx", action="store_true")
    p.add_argument(
        "--provision",
        action="store_true",
        help="run provision.py first (args from CHARPACK_PROVISION_ARGS)",
    )
    p.add_argument("--ready-timeout", type=float, default=900.0)
    return p.parse_args(argv)


def fail(message: str, code: int = 2) -> int:
    sys.stderr.write(f"charpack start: {message}\n")
    return code


class Services:
    """The child processes, their logs, and the status file nginx serves while starting."""

    def __init__(self, *, run_dir: Path, logs_dir: Path, token: str) -> None:
        self.run_dir, self.logs_dir, self.token = run_dir, logs_dir, token
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.stop_requested = threading.Event()

    def status(self, phase: str, detail: str = "") -> None:
        tmp = self.run_dir / "status.json.tmp"
        body = {"phase": phase, "detail": detail, "since": int(time.time())}
        tmp.write_text(json.dumps(body) + "\n")
        tmp.chmod(0o644)
        tmp.replace(self.run_dir / "status.json")
        sys.stderr.write(f"charpack start: {phase} {detail}\n")

    def start_nginx(self, nginx: str, conf: Path) -> None:
        proc = subprocess.Popen(
            [nginx, "-e", "stderr", "-c", str(conf), "-p", str(self.run_dir)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.procs["nginx"] = proc
        threading.Thread(target=self._pump, args=(proc, "nginx.log"), daemon=True).start()

    def _pump(self, proc: subprocess.Popen[bytes], name: str) -> None:
        # nginx writes request lines (with query strings) into its error log: redact tokens.
        pattern = re.compile(rb"(token=)[^&\s\"]+")
        with (self.logs_dir / name).open("ab") as out:
            assert proc.stdout is not None
            for line in proc.stdout:
                line = pattern.sub(rb"\1<redacted>", line)
                out.write(line.replace(self.token.encode(), b"<redacted>"))
                out.flush()

    def start_comfyui(self, cmd: list[str]) -> None:
        log = (self.logs_dir / "comfyui.log").open("ab")
        self.procs["comfyui"] = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if not _secret_env(k)},
        )

    def dead(self) -> str | None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                return f"{name} exited with {proc.returncode}"
        return None

    def stop(self) -> None:
        stops = {"comfyui": signal.SIGINT, "nginx": signal.SIGQUIT}
        for name, proc in self.procs.items():
            if proc.poll() is None:
                proc.send_signal(stops.get(name, signal.SIGTERM))
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _secret_env(name: str) -> bool:
    # ComfyUI and its custom nodes do not need our secrets.
    return name in ("CHARPACK_COMFY_TOKEN", "CIVITAI_TOKEN", "HF_TOKEN", "RUNPOD_API_KEY")


def render_nginx(*, token: str, listen: str, upstream: str, run_dir: Path, user: str) -> Path:
    text = (HERE / "nginx.conf.template").read_text()
    values = {
        "TOKEN": token,
        "LISTEN": listen,
        "UPSTREAM": upstream,
        "RUN_DIR": str(run_dir),
        "MAX_BODY": "512m",
        "USER_DIRECTIVE": f"user {user};" if user and os.geteuid() == 0 else "",
    }
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    if left := re.findall(r"\{\{[A-Z_]+\}\}", text):
        raise ValueError(f"nginx.conf.template: unknown placeholders {left}")
    conf = run_dir / "nginx.conf"
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return conf


def find_nginx(install: bool) -> str | None:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else "")
    if found or not install or os.geteuid() != 0:
        return found or None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "nginx-light"]):
        subprocess.run(cmd, env=env, check=False, stdout=subprocess.DEVNULL)
    return shutil.which("nginx")


def wait_ready(url: str, services: Services, deadline: float) -> str | None:
    """Wait until ``url`` answers 200; return an error text on timeout or a dead child."""
    while time.monotonic() < deadline:
        if services.stop_requested.is_set():
            return "stopped"
        if problem := services.dead():
            return problem
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return None
        except OSError:
            pass
        services.stop_requested.wait(1.0)
    return f"no answer from {url} in time"


def run(args: argparse.Namespace) -> int:
    token = os.environ.get("CHARPACK_COMFY_TOKEN", "")
    if not TOKEN_RE.match(token):
        return fail(f"refusing to start ComfyUI without a valid token: {TOKEN_HELP}")
    try:
        manifest = load_manifest(args.manifest)
    except PodManifestError as exc:
        return fail(str(exc))
    root = args.root.resolve()
    logs_dir = root / manifest.layout["logs_dir"]
    logs_dir.mkdir(parents=True, exist_ok=True)
    run_dir = args.run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    run_dir.chmod(0o711)  # workers may read status.json; nginx.conf itself is 0600
    nginx = find_nginx(not args.no_install_nginx)
    if not nginx:
        return fail("nginx is not installed: `apt-get install -y nginx-light` (as root)")
    comfy_port = int(manifest.pod.get("comfy_port", 8189))
    upstream = args.upstream or f"127.0.0.1:{comfy_port}"
    listen = args.listen or f"0.0.0.0:{manifest.pod.get('public_port', 8188)}"
    conf = render_nginx(
        token=token, listen=listen, upstream=upstream, run_dir=run_dir, user=args.nginx_user
    )
    check = subprocess.run(
        [nginx, "-t", "-q", "-e", "stderr", "-c", str(conf), "-p", str(run_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    if check.returncode != 0:
        return fail(f"nginx rejected the config: {check.stderr.replace(token, '<redacted>')}")

    services = Services(run_dir=run_dir, logs_dir=logs_dir, token=token)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: services.stop_requested.set())
    services.status("starting", "auth proxy")
    services.start_nginx(nginx, conf)
    try:
        return _serve(args, manifest, root, services, upstream, comfy_port)
    finally:
        services.stop()


def _serve(args, manifest, root, services, upstream, comfy_port) -> int:  # type: ignore[no-untyped-def]
    if args.provision:
        services.status("provisioning", "installing ComfyUI, node packs and models")
        extra = shlex.split(os.environ.get("CHARPACK_PROVISION_ARGS", ""))
        subprocess.run(
            [
                sys.executable,
                str(HERE / "provision.py"),
                "--root",
                str(root),
                "--manifest",
                str(args.manifest),
                *extra,
            ],
            check=False,
        )
        report = services.logs_dir / "provision-report.json"
        if report.exists():
            shutil.copyfile(report, services.run_dir / "provision-report.json")
            (services.run_dir / "provision-report.json").chmod(0o644)
    if not args.upstream:
        comfy_dir = root / manifest.layout["comfyui_dir"]
        python = root / manifest.layout["venv_dir"] / "bin" / "python"
        if not (comfy_dir / "main.py").exists() or not python.exists():
            services.status("failed", "ComfyUI is not installed: see logs/provision.log")
            return 1
        services.status("starting", "ComfyUI")
        services.start_comfyui(
            [
                str(python),
                str(comfy_dir / "main.py"),
                "--listen",
                "127.0.0.1",
                "--port",
                str(comfy_port),
                "--disable-auto-launch",
                *shlex.split(os.environ.get("CHARPACK_COMFY_ARGS", "")),
            ]
        )
    deadline = time.monotonic() + args.ready_timeout
    problem = wait_ready(f"http://{upstream}/system_stats", services, deadline)
    if problem:
        services.status("failed", problem)
        return 0 if problem == "stopped" else 1
    services.status("ready")
    while not services.stop_requested.wait(1.0):
        if problem := services.dead():
            services.status("failed", problem)
            return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
