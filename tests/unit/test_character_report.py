"""The 5-shot identity report: per shot type and overall mean, p10 and min before and after the
LoRA, a no-face image counted as a failed likeness, and a contact sheet of both runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from charpack.character.report import compare, write_report
from tests.support.pack_folders import JobSpec, Shot, build


def _identity_run(folder: Path, scores: dict[str, list[float | None]]) -> None:
    jobs = []
    for scene, values in scores.items():
        for i, score in enumerate(values, start=1):
            seed = 100 * i + len(scene)
            if score is None:  # no face found: the runner keeps the image below the threshold
                jobs.append(
                    JobSpec(scene, i, [Shot(seed, None, "below_threshold")], "below_threshold")
                )
            elif score < 0.45:
                jobs.append(
                    JobSpec(scene, i, [Shot(seed, score, "below_threshold")], "below_threshold")
                )
            else:
                jobs.append(JobSpec(scene, i, [Shot(seed, score)]))
    manifest = build(folder, jobs, pack="ava-identity-test")
    for entry in manifest:
        if entry.get("score") is None and entry.get("attempts"):
            entry["attempts"][0]["face"] = False
            manifest.put(entry)
    manifest.save()


@pytest.fixture
def runs(tmp_path: Path) -> tuple[Path, Path]:
    before, after = tmp_path / "before", tmp_path / "after"
    _identity_run(before, {"portrait": [0.50], "full-body": [0.30], "profile": [None]})
    _identity_run(after, {"portrait": [0.70], "full-body": [0.60], "profile": [0.40]})
    return before, after


def test_figures_per_shot_type_and_overall_before_and_after(runs: tuple[Path, Path]) -> None:
    report = compare(*runs)
    assert report.shots == ["portrait", "full-body", "profile"]
    data = report.to_json()
    by_shot = {row["scene"]: row for row in data["shots"]}
    assert by_shot["portrait"]["before"]["mean"] == 0.5
    assert by_shot["portrait"]["after"]["mean"] == 0.7
    assert by_shot["portrait"]["delta"]["mean"] == pytest.approx(0.2)
    assert by_shot["profile"]["before"] == {
        "images": 1,
        "no_face": 1,
        "missing": 0,
        "mean": 0.0,
        "p10": 0.0,
        "min": 0.0,
    }
    overall = data["overall"]
    assert overall["before"]["mean"] == pytest.approx((0.5 + 0.3 + 0.0) / 3, abs=1e-4)
    assert overall["after"]["min"] == 0.4 and overall["before"]["min"] == 0.0
    assert overall["after"]["p10"] == pytest.approx(0.44)  # between 0.4 and 0.6, inclusive


def test_the_report_files_are_written_and_agree(runs: tuple[Path, Path], tmp_path: Path) -> None:
    files = write_report(compare(*runs), tmp_path / "identity" / "v1")
    markdown = files.markdown.read_text()
    assert "| portrait | 1/1 | 0.500 | 0.700 | +0.200 |" in markdown
    assert "| **overall** |" in markdown and "no face found scores 0" in markdown
    data = json.loads(files.json.read_text())
    assert data["overall"]["after"]["mean"] == pytest.approx(0.5667, abs=1e-4)
    with Image.open(files.contact) as sheet:
        assert sheet.format == "JPEG" and sheet.width > 500 and sheet.height > 600


def test_failed_jobs_are_counted_missing_not_scored(tmp_path: Path) -> None:
    before, after = tmp_path / "b", tmp_path / "a"
    _identity_run(before, {"portrait": [0.5]})
    build(
        after,
        [
            JobSpec("portrait", 1, [Shot(7, None, "error", "out of memory")], status="failed"),
        ],
    )
    report = compare(before, after)
    _, row = report.rows["portrait"]
    assert row.missing == 1 and row.scores == []
    assert report.to_json()["shots"][0]["delta"] is None
    assert (
        "1 job(s) failed or did not run"
        in write_report(report, tmp_path / "r").markdown.read_text()
    )
