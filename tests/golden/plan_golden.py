"""Golden workflows: what ``charpack plan`` writes for every example pack, committed.

``tests/unit/test_plan_golden.py`` plans each example pack and compares every job's workflow
with ``tests/golden/plan/<pack>.jsonl`` (one job a line, sorted, so a diff names the job).
The files were made before the package restructure; regenerate them only for a deliberate
change of the graphs (``python -m tests.golden.plan_golden``) and say why in the commit.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from charpack.check.plan import write_plan
from charpack.pack.packfile import load_pack

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
GOLDEN = Path(__file__).resolve().parent / "plan"


def planned(pack_file: Path) -> dict[str, object]:
    """Every workflow ``charpack plan`` writes for ``pack_file``: relative path -> graph."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        write_plan(load_pack(pack_file), out)
        return {
            p.relative_to(out / "workflows").as_posix(): json.loads(p.read_text())
            for p in sorted((out / "workflows").rglob("*.json"))
        }


def lines(workflows: dict[str, object]) -> list[str]:
    return [
        json.dumps({k: v}, sort_keys=True, separators=(",", ":"))
        for k, v in sorted(workflows.items())
    ]


def main() -> None:
    GOLDEN.mkdir(exist_ok=True)
    for pack_file in EXAMPLES:
        text = "\n".join(lines(planned(pack_file))) + "\n"
        (GOLDEN / f"{pack_file.stem}.jsonl").write_text(text)
        print(f"wrote {GOLDEN / pack_file.stem}.jsonl")  # noqa: T201


if __name__ == "__main__":
    main()
