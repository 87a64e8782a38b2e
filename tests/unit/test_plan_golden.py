"""``charpack plan`` of every example pack writes exactly the committed golden workflows.

Resuming a pack folder and comparing runs depend on the graphs never changing by accident
(a refactor, a moved module, a renamed constant): this fails on the first job whose workflow
differs, naming it (tests/golden/plan_golden.py says how the files were made).
"""

from __future__ import annotations

import json

import pytest

from tests.golden.plan_golden import EXAMPLES, GOLDEN, planned


@pytest.mark.parametrize("pack_file", EXAMPLES, ids=lambda p: p.stem)
def test_plan_writes_the_golden_workflows(pack_file) -> None:  # type: ignore[no-untyped-def]
    golden = {}
    for line in (GOLDEN / f"{pack_file.stem}.jsonl").read_text().splitlines():
        golden.update(json.loads(line))
    now = planned(pack_file)
    assert sorted(now) == sorted(golden), "the set of jobs changed"
    for name, graph in golden.items():
        assert now[name] == graph, f"{pack_file.name}: {name} differs from its golden workflow"
