"""The dispatch decisions of ``charpack run``, without servers: backlog, least loaded, model
groups, unhealthy servers, and work taken back from a dead server."""

from __future__ import annotations

import pytest

from charpack.run.scheduler import Scheduler


def jobs(group: str, n: int, start: int = 1) -> list[tuple[str, str]]:
    return [(f"{group}/{i:03d}", group) for i in range(start, start + n)]


def add(s: Scheduler, items: list[tuple[str, str]]) -> None:
    """Queue jobs one by one, as the run loop does (``Scheduler.add``, file order)."""
    for key, group in items:
        s.add(key, group)


def load(s: Scheduler, server: str) -> int:
    return s.slots[server].load


def test_each_server_gets_its_backlog_plus_the_running_prompt_and_no_more() -> None:
    s = Scheduler(servers=["a"], backlog=2)
    add(s, jobs("g", 10))
    assert s.assign() == [("a", "g/001"), ("a", "g/002"), ("a", "g/003")]
    assert s.assign() == []  # full: one running, two queued
    s.finished("a")
    assert s.assign() == [("a", "g/004")]
    assert s.waiting() == 6


def test_backlog_zero_means_one_prompt_at_a_time() -> None:
    s = Scheduler(servers=["a"], backlog=0)
    add(s, jobs("g", 3))
    assert s.assign() == [("a", "g/001")]
    assert s.assign() == []


def test_jobs_go_to_the_least_loaded_server() -> None:
    s = Scheduler(servers=["a", "b", "c"], backlog=2)
    add(s, jobs("g", 4))
    # Equal loads: servers in the order given, one job each before anyone gets a second.
    assert [server for server, _ in s.assign()] == ["a", "b", "c", "a"]
    s.finished("a")
    s.finished("a")
    s.finished("c")
    add(s, jobs("g", 3, start=5))
    # loads a0 b1 c0: a, then c (a1 b1 c0 -> c), then a (all at 1: order decides).
    assert [server for server, _ in s.assign()] == ["a", "c", "a"]
    assert (load(s, "a"), load(s, "b"), load(s, "c")) == (2, 1, 1)


def test_the_pack_tail_is_spread_instead_of_queued_on_one_server() -> None:
    s = Scheduler(servers=["a", "b"], backlog=4)
    add(s, jobs("g", 3))
    assert sorted(server for server, _ in s.assign()) == ["a", "a", "b"]


def test_an_unhealthy_server_gets_nothing_until_it_is_back() -> None:
    s = Scheduler(servers=["a", "b"], backlog=1)
    s.set_healthy("a", False)
    add(s, jobs("g", 4))
    assert s.assign() == [("b", "g/001"), ("b", "g/002")]
    s.set_healthy("a", True)
    assert s.assign() == [("a", "g/003"), ("a", "g/004")]
    assert s.healthy() == ["a", "b"]


def test_jobs_sharing_models_stay_on_one_server() -> None:
    s = Scheduler(servers=["a", "b"], backlog=1)
    add(s, jobs("ckptA", 4) + jobs("ckptB", 4))
    first = s.assign()
    by_server: dict[str, set[str]] = {}
    for server, key in first:
        by_server.setdefault(server, set()).add(key.split("/")[0])
    # Each server took one group; nobody loads both checkpoints.
    assert by_server == {"a": {"ckptA"}, "b": {"ckptB"}}
    for _ in range(2):
        s.finished("a")
    assert [key for _, key in s.assign()] == ["ckptA/003", "ckptA/004"]


def test_a_server_whose_group_ran_dry_moves_to_a_group_nobody_runs() -> None:
    s = Scheduler(servers=["a", "b"], backlog=0)
    add(s, jobs("x", 1) + jobs("y", 3) + jobs("z", 2))
    assert s.assign() == [("a", "y/001"), ("b", "z/001")]  # largest groups first
    s.finished("a")
    assert s.assign() == [("a", "y/002")]
    s.finished("a")
    s.finished("b")
    assert s.assign() == [("a", "y/003"), ("b", "z/002")]
    s.finished("b")
    # b's group is empty; "x" is free, so b takes it rather than joining a on "y".
    assert s.assign() == [("b", "x/001")]


def test_when_every_group_is_taken_a_free_server_helps_with_the_largest() -> None:
    s = Scheduler(servers=["a", "b", "c"], backlog=0)
    add(s, jobs("big", 5) + jobs("small", 2))
    assert s.assign() == [("a", "big/001"), ("b", "small/001"), ("c", "big/002")]


def test_work_taken_back_from_a_dead_server_goes_to_the_others_first() -> None:
    s = Scheduler(servers=["a", "b"], backlog=1)
    add(s, jobs("g", 6))
    assigned = s.assign()
    on_a = [key for server, key in assigned if server == "a"]
    assert on_a == ["g/001", "g/003"]
    # a dies: the runner takes its prompts back (after checking they did not finish).
    s.set_healthy("a", False)
    for key in on_a:
        s.finished("a")
        s.add(key, "g", front=True)
    s.finished("b")  # b finished one of its own and has room for one
    assert s.assign() == [("b", "g/003")]
    s.finished("b")
    assert s.assign() == [("b", "g/001")]
    assert load(s, "a") == 0


def test_a_job_can_wait_only_once_and_be_withdrawn() -> None:
    s = Scheduler(servers=["a"], backlog=1)
    s.add("g/001", "g")
    with pytest.raises(ValueError, match="already waiting"):
        s.add("g/001", "g")
    assert s.remove("g/001") is True
    assert s.remove("g/001") is False
    assert s.assign() == []
    with pytest.raises(ValueError, match="no prompt in flight"):
        s.finished("a")


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="backlog"):
        Scheduler(servers=["a"], backlog=-1)
    with pytest.raises(ValueError, match="unique"):
        Scheduler(servers=["a", "a"])
