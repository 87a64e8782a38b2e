"""Golden values of what a run derives and a resume re-derives: seeds, retry seeds, prompt ids.

A pack folder records prompt ids and seeds; the next run of the same pack recomputes them and
must get the same ones, or it posts a prompt a second time, misses one in flight, or files an
image under another name. So these are literal values, computed once from the code before the
restructure (issue 9), never from the code under test: a change to any derivation fails here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from charpack.pack.jobs import derive_seed, expand, prompt_id_for, retry_seed
from charpack.pack.packfile import load_pack

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RUN_ID = "00000000-0000-4000-8000-000000000000"


def test_derive_seed_is_sha256_of_the_parts_in_the_seed_space() -> None:
    assert derive_seed(0, "walk", 0) == 2186687539
    assert derive_seed("retry", 1, "walk/001", 2) == 3363946541
    # The parts are joined, not concatenated: ("ab", "c") is not ("a", "bc").
    assert derive_seed("ab", "c") != derive_seed("a", "bc")


def test_prompt_ids_are_uuid5_of_run_job_and_attempt() -> None:
    assert prompt_id_for(RUN_ID, "walk/001", 1) == "a1ea88cb-7e75-5c0f-bab6-6eb8c00d1e30"
    assert prompt_id_for(RUN_ID, "walk/001", 2) == "7227711a-e5f6-5e31-b5c3-f66f9c1762b4"
    run = "6f1c2d3e-4b5a-4978-8899-aabbccddeeff"
    assert prompt_id_for(run, "cafe/012", 3) == "b7b95f19-e30a-5fa4-b74e-fb4b732c7e2b"


# examples/small-pack.yaml (pack seed 20261121): key -> (seed, retry 2, retry 3, file stem).
# If the example pack itself is edited on purpose, recompute these from the code before the edit.
SMALL_PACK = {
    "cafe-terrace/001": (2374260740, 1997287627, 2471482630, "cafe-terrace_001_2374260740"),
    "cafe-terrace/002": (2977603465, 1802118146, 2473092268, "cafe-terrace_002_2977603465"),
    "cafe-terrace/003": (1253806724, 2174023458, 1143210708, "cafe-terrace_003_1253806724"),
    "city-walk/001": (1853282389, 4189882986, 502808764, "city-walk_001_1853282389"),
    "city-walk/002": (1694381837, 1682528588, 3520263062, "city-walk_002_1694381837"),
    "city-walk/003": (1678745367, 2174051561, 1311703068, "city-walk_003_1678745367"),
}


@pytest.fixture(scope="module")
def small_jobs() -> dict[str, object]:
    return {job.key: job for job in expand(load_pack(EXAMPLES / "small-pack.yaml"))}


def test_job_seeds_retry_seeds_and_file_stems_of_the_example_pack(small_jobs: dict) -> None:
    for key, (seed, retry2, retry3, stem) in SMALL_PACK.items():
        job = small_jobs[key]
        assert (job.base_seed, job.seed) == (seed, seed), key
        assert retry_seed(job, 1) == seed, key  # attempt 1 is the job's own seed
        assert (retry_seed(job, 2), retry_seed(job, 3)) == (retry2, retry3), key
        assert job.spec.output.name == stem, key


def test_explicit_seeds_are_used_as_written(small_jobs: dict) -> None:
    beach = [small_jobs["beach-sunset/001"], small_jobs["beach-sunset/002"]]
    assert [job.seed for job in beach] == [1234, 98765]
