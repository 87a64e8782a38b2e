"""A training when things break: the client is killed during a chunk, the server is killed
during a chunk (and comes back with its files, or without its LoRA files).

Every kill lands on a progress event of the long last chunk (never on time): the client run is
a real process (``python -m tests.server.test_training_faults <char_dir> <url>``, killed with
SIGKILL), the server a private real ComfyUI killed and started again on the same folders.
Each server's ``/history`` then shows what ran on it, so a chunk posted twice would show.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from charpack.character.presets import TrainingSpec
from charpack.character.state import TrainingState, load_state
from charpack.character.training import TrainingEvent, train_character
from charpack.comfy.auth import ServerConfig
from tests.comfy.server import ComfyServer
from tests.server.test_training_run import file_sha256, history, write_character
from tests.support.commands import JsonLines

pytestmark = pytest.mark.server

REPO = Path(__file__).resolve().parents[2]
DEADLINE_S = 300.0
# Chunks (0, 2), (2, 2), (4, 8): the kills land on the first step of the 8-step chunk, long
# enough on the CPU server (seconds a step) that it is still running when the kill arrives.
SLOW = TrainingSpec(
    steps=12, warmup_steps=4, warmup_chunks=2, chunk_steps=8, rank=4, seed=5,
    training_dtype="fp32", lora_dtype="fp32",
)  # fmt: skip
LONG = 2


def in_long_chunk(event: TrainingEvent) -> bool:
    return event.kind == "progress" and event.chunk == LONG


class Watcher:
    """Collects a training's events; the test waits for the first one matching a condition."""

    def __init__(self, condition: Callable[[TrainingEvent], bool]) -> None:
        self.events: list[TrainingEvent] = []
        self.condition = condition
        self.seen = threading.Event()

    def __call__(self, event: TrainingEvent) -> None:
        self.events.append(event)
        if self.condition(event):
            self.seen.set()

    def wait(self) -> None:
        assert self.seen.wait(DEADLINE_S), f"no matching event within {DEADLINE_S} s"

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]


class Child:
    """A training in its own process, its events read as JSON lines on a thread."""

    def __init__(self, char_dir: Path, url: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHARPACK_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.server.test_training_faults", str(char_dir), url],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._lines = JsonLines(self.proc)

    def wait_for(self, condition: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        while True:
            event = self._lines.get(timeout=DEADLINE_S)
            assert event is not None, f"the training ended first (exit {self.proc.wait(10)})"
            if condition(event):
                return event

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._lines.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def children() -> Iterator[list[Child]]:
    started: list[Child] = []
    yield started
    for child in started:  # a failed test must not leave a training behind
        child.kill()


def state_of(char_dir: Path) -> TrainingState:
    state = load_state(char_dir / "training" / "v1")
    assert state is not None
    return state


def killed_in_the_long_chunk(children: list[Child], char_dir: Path, url: str) -> None:
    """A ``charpack character train`` child killed once the long chunk runs on the server."""
    child = Child(char_dir, url)
    children.append(child)
    child.wait_for(lambda e: e["event"] == "progress" and e["chunk"] == LONG)
    child.kill()


def test_a_killed_client_reattaches_to_the_running_chunk_and_never_posts_it_twice(
    comfy_server_factory: Callable[..., ComfyServer], children: list[Child], tmp_path: Path
) -> None:
    server = comfy_server_factory()
    char_dir = write_character(tmp_path / "ava", variant=21)
    killed_in_the_long_chunk(children, char_dir, server.url)
    posted = state_of(char_dir).chunks[LONG]
    assert posted.status == "posted" and posted.attempt == 1

    watch = Watcher(lambda e: False)
    result = train_character(char_dir, ServerConfig.from_url(server.url, env={}), on_event=watch)

    assert result.reattached and result.resumed_from is None
    assert "reattached" in watch.kinds() and "posted" not in watch.kinds()
    state = state_of(char_dir)
    assert state.chunks[LONG].prompt_id == posted.prompt_id and state.chunks[LONG].attempt == 1
    # Everything that ran on the server: one prompt per chunk, the killed one's included.
    assert set(history(server.url)) == {c.prompt_id for c in state.chunks}
    assert result.steps == 12 and file_sha256(result.lora_path) == result.sha256


def test_a_chunk_that_finished_while_client_and_server_were_down_is_kept_not_retrained(
    comfy_server_factory: Callable[..., ComfyServer], children: list[Child], tmp_path: Path
) -> None:
    server = comfy_server_factory()
    char_dir = write_character(tmp_path / "ava", variant=51)
    killed_in_the_long_chunk(children, char_dir, server.url)
    last = state_of(char_dir).chunks[LONG].prompt_id
    wait_until(lambda: last in history(server.url))  # it finished with no client to see it
    server.kill()
    server.start()  # its history, with the save node's report of the file, is gone

    watch = Watcher(lambda e: False)
    result = train_character(char_dir, ServerConfig.from_url(server.url, env={}), on_event=watch)

    final = "charpack/ava/ava-v1_12_steps_lora.safetensors"
    assert result.resumed_from == f"server file {final}" and result.server_file == final
    assert "posted" not in watch.kinds()  # nothing trained again
    assert history(server.url) == {}
    on_server = server.models_dir / "loras" / final
    assert file_sha256(result.lora_path) == file_sha256(on_server) == result.sha256


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.2)  # polling interval of the condition, not a wait for an effect


def kill_during_long_chunk(
    server: ComfyServer, char_dir: Path, between: Callable[[], None]
) -> tuple[Any, Watcher]:
    """Train; on the long chunk's first step kill the server, run ``between``, start it
    again on the same folders; returns the training's result and events."""
    watch = Watcher(in_long_chunk)
    config = ServerConfig.from_url(server.url, env={})
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(
            train_character, char_dir, config, spec=SLOW, on_event=watch, give_up_s=DEADLINE_S
        )
        watch.wait()
        server.kill()
        between()
        server.start()  # same port, same folders: queue and history are gone
        result = future.result(timeout=DEADLINE_S)
    return result, watch


def test_a_server_killed_during_training_resumes_from_the_last_saved_chunk_file(
    comfy_server_factory: Callable[..., ComfyServer], tmp_path: Path
) -> None:
    server = comfy_server_factory()
    char_dir = write_character(tmp_path / "ava", variant=31)
    result, watch = kill_during_long_chunk(server, char_dir, lambda: None)

    saved = "charpack/ava/ava-v1_4_steps_lora.safetensors"
    assert result.resumed_from == f"server file {saved}"
    resumed = [e for e in watch.events if e.kind == "resumed"]
    assert len(resumed) == 1 and saved in resumed[0].message
    assert "step 4 of 12" in resumed[0].message
    assert "server_down" in watch.kinds()
    state = state_of(char_dir)
    assert [c.attempt for c in state.chunks] == [1, 1, 2]
    assert state.resumes[0]["from"] == result.resumed_from
    # After the restart only the long chunk ran again, continuing from the saved file.
    assert set(history(server.url)) == {state.chunks[LONG].prompt_id}
    assert result.steps == 12 and file_sha256(result.lora_path) == result.sha256
    assert asdict(state)["status"] == "finished"


def test_a_server_restarted_without_its_lora_files_starts_over_and_says_so(
    comfy_server_factory: Callable[..., ComfyServer], tmp_path: Path
) -> None:
    server = comfy_server_factory()
    char_dir = write_character(tmp_path / "ava", variant=41)
    loras = server.models_dir / "loras" / "charpack"
    result, watch = kill_during_long_chunk(server, char_dir, lambda: shutil.rmtree(loras))

    assert result.resumed_from == "start"
    resumed = [e for e in watch.events if e.kind == "resumed"]
    assert len(resumed) == 1 and "from the start" in resumed[0].message
    state = state_of(char_dir)
    assert [c.attempt for c in state.chunks] == [2, 2, 2]
    assert set(history(server.url)) == {c.prompt_id for c in state.chunks}
    assert result.steps == 12 and file_sha256(result.lora_path) == result.sha256


def main() -> None:
    """The child of the client-kill test: train, printing each event as a JSON line."""
    char_dir, url = sys.argv[1], sys.argv[2]

    def emit(event: TrainingEvent) -> None:
        sys.stdout.write(json.dumps({"event": event.kind, **asdict(event)}) + "\n")
        sys.stdout.flush()

    train_character(char_dir, ServerConfig.from_url(url, env={}), spec=SLOW, on_event=emit)


if __name__ == "__main__":
    main()
