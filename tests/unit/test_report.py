"""charpack report: counts, retries, failures, scores, time and cost of a pack folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from charpack.cli import pack as cli_pack
from charpack.cli.pack import histogram
from charpack.folder.manifest import Manifest, ManifestError
from charpack.folder.report import DEFAULT_PRICE, PRICE_ENV, build_report, price_from_env
from tests.support.pack_folders import JobSpec, Shot, build, small_pack

app = typer.Typer()
app.command()(cli_pack.report)
app.command()(cli_pack.publish)  # two commands, so typer keeps the command name
runner = CliRunner()


def test_counts_retries_failures_and_scores(tmp_path: Path) -> None:
    small_pack(tmp_path)
    r = build_report(tmp_path, price_per_hour=0.69)
    assert (r.header.pack, r.header.character, r.header.threshold) == ("ava-weekend", "Ava", 0.45)
    assert r.jobs == 7 and r.images == 5 and r.attempts == 7 and r.retried_jobs == 1
    assert r.status == {"done": 5, "failed": 1, "pending": 1}
    assert r.attempt_status == {"success": 5, "below_threshold": 1, "error": 1}
    assert sorted(r.accepted_scores) == [0.49, 0.55, 0.58, 0.62, 0.71]
    assert r.rejected_scores == [0.31]
    cafe, city = r.scenes
    assert (cafe.scene, cafe.done, cafe.attempts, cafe.mean_score) == (
        "cafe-terrace", 3, 4, pytest.approx((0.62 + 0.58 + 0.71) / 3),
    )  # fmt: skip
    assert (city.done, city.failed, city.pending) == (2, 1, 1)
    (failure,) = r.failures
    assert failure.key == "city-walk/001" and "out of memory" in failure.error


def test_cost_is_each_servers_busy_span_times_the_price(tmp_path: Path) -> None:
    a, b = "https://a-8188.proxy.runpod.net", "https://b-8188.proxy.runpod.net"
    jobs = [
        JobSpec("s", 1, [Shot(1, 0.6, execution_s=10, queue_wait_s=2, server=a)]),
        JobSpec("s", 2, [Shot(2, 0.6, execution_s=20, queue_wait_s=0, server=a)]),
        JobSpec("s", 3, [Shot(3, 0.6, execution_s=30, queue_wait_s=0, server=b)]),
    ]
    build(tmp_path, jobs)
    r = build_report(tmp_path, price_per_hour=1.80)
    # The builder runs attempts back to back: a is busy 12 + 20 s, b 30 s.
    assert r.server_spans_s == {a: pytest.approx(32.0), b: pytest.approx(30.0)}
    assert r.cost == pytest.approx(62.0 / 3600 * 1.80)
    assert r.cost_per_image == pytest.approx(r.cost / 3)  # type: ignore[operator]
    assert r.gpu_seconds_per_image == pytest.approx(20.0)
    assert r.stage_means_s == {"base": pytest.approx(12.0), "upscale": pytest.approx(8.0)}


def test_a_job_below_the_threshold_is_listed_with_its_best_score(tmp_path: Path) -> None:
    shots = [Shot(7, 0.31, "below_threshold"), Shot(8, 0.40, "below_threshold")]
    build(
        tmp_path,
        [JobSpec("gym", 1, shots, status="below_threshold"), JobSpec("gym", 2, [Shot(9, 0.7)])],
    )
    r = build_report(tmp_path, price_per_hour=0.69)
    assert r.images == 1 and r.status == {"below_threshold": 1, "done": 1}
    assert r.rejected_scores == [0.31, 0.40] and r.accepted_scores == [0.7]
    (failure,) = r.failures
    assert failure.status == "below_threshold" and "best score 0.400" in failure.error


def test_histogram_marks_rejected_scores_and_the_threshold() -> None:
    lines = histogram([0.61, 0.62, 0.71], [0.31], threshold=0.45, width=10)
    assert lines[0].startswith("0.30–0.35 │░") and lines[0].endswith(" 1")
    assert any("◀ threshold 0.45" in line and line.startswith("0.45") for line in lines)
    assert "██████████ 2" in next(line for line in lines if line.startswith("0.60"))
    assert histogram([], []) == []
    edge = histogram([0.86, 0.93], [], threshold=0.9)  # 0.9 sits on a bin edge: one mark
    assert [line[:4] for line in edge if "threshold" in line] == ["0.90"]


def test_price_comes_from_the_environment_or_the_documented_default() -> None:
    value, source = price_from_env({})
    assert value == DEFAULT_PRICE and "RTX 4090" in source and "runpod/README.md" in source
    assert price_from_env({PRICE_ENV: "0.34"}) == (0.34, f"from {PRICE_ENV}")
    with pytest.raises(ValueError, match=f"{PRICE_ENV}='cheap' is not a number — set it"):
        price_from_env({PRICE_ENV: "cheap"})


def test_cli_prints_tables_and_json(tmp_path: Path) -> None:
    small_pack(tmp_path)
    shown = runner.invoke(app, ["report", str(tmp_path)], env={PRICE_ENV: "1.0", "COLUMNS": "120"})
    assert shown.exit_code == 0, shown.output
    assert "cafe-terrace" in shown.output and "1 job(s) needed a retry" in shown.output
    assert "◀ threshold 0.45" in shown.output and f"from {PRICE_ENV}" in shown.output
    assert "city-walk/001" in shown.output and "out of memory" in shown.output
    out = runner.invoke(app, ["report", str(tmp_path), "--json", "--price-per-hour", "3.6"])
    data = json.loads(out.output)
    assert data["images"] == 5 and data["price_source"] == "--price-per-hour"
    assert data["cost"] == pytest.approx(data["billed_s"] / 3600 * 3.6, abs=1e-4)
    assert data["score_stats"]["max"] == 0.71 and data["failures"][0]["key"] == "city-walk/001"


def test_cli_rejects_a_malformed_price_in_the_environment(tmp_path: Path) -> None:
    small_pack(tmp_path)
    bad = runner.invoke(app, ["report", str(tmp_path)], env={PRICE_ENV: "cheap"})
    assert bad.exit_code == 2 and "is not a number" in bad.output


def test_a_folder_without_manifest_says_what_it_expects(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no manifest — is .* a pack folder made by"):
        build_report(tmp_path, price_per_hour=0.69)


def _no_face(folder: Path, *keys_attempts: tuple[str, int]) -> None:
    """Mark these (job, attempt number) as the runner records an image with no face."""
    manifest = Manifest.load(folder)
    for key, number in keys_attempts:
        entry = manifest.job(key)
        attempt = entry["attempts"][number - 1]
        attempt.update({"face": False, "score": None})
        if number == len(entry["attempts"]):
            entry["score"] = None
        manifest.put(entry)
    manifest.save()


def test_no_face_is_counted_apart_never_as_a_score(tmp_path: Path) -> None:
    shots = [Shot(7, None, "below_threshold"), Shot(8, None, "below_threshold")]
    build(
        tmp_path,
        [
            JobSpec("gym", 1, shots, status="below_threshold"),
            JobSpec("gym", 2, [Shot(9, None, "below_threshold"), Shot(10, 0.7)]),
            JobSpec("gym", 3, [Shot(11, 0.5)]),
        ],
    )
    _no_face(tmp_path, ("gym/001", 1), ("gym/001", 2), ("gym/002", 1))
    r = build_report(tmp_path, price_per_hour=0.69)
    assert r.no_face_attempts == 3 and r.no_face_images == 0
    assert r.accepted_scores == [0.7, 0.5] and r.rejected_scores == []  # no 0.0 anywhere
    (failure,) = r.failures
    assert failure.key == "gym/001" and "no face found in any attempt" in failure.error
    assert "0.000" not in failure.error
    (gym,) = r.scenes
    assert gym.no_face == 3 and gym.mean_score == pytest.approx(0.6)
    data = json.loads(runner.invoke(app, ["report", str(tmp_path), "--json"]).output)
    assert data["no_face_attempts"] == 3 and data["scenes"][0]["no_face"] == 3
    shown = runner.invoke(app, ["report", str(tmp_path)], env={"COLUMNS": "160"}).output
    assert "no face found in 3 attempt(s)" in shown and "best score" not in shown


def test_identity_stats_give_mean_p10_p90_and_min_of_the_accepted_images(tmp_path: Path) -> None:
    scores = [0.50, 0.60, 0.70, 0.80, 0.90, 0.95]
    build(tmp_path, [JobSpec("s", i, [Shot(i, s)]) for i, s in enumerate(scores, start=1)])
    r = build_report(tmp_path, price_per_hour=0.69)
    stats = r.to_json()["score_stats"]
    assert stats["min"] == 0.50 and stats["max"] == 0.95
    assert stats["mean"] == pytest.approx(sum(scores) / 6)
    assert stats["p10"] == pytest.approx(0.55) and stats["p90"] == pytest.approx(0.925)
    one = build_report(build(tmp_path / "one", [JobSpec("s", 1, [Shot(1, 0.8)])]).folder,
                       price_per_hour=0.69)  # fmt: skip
    assert one.to_json()["score_stats"]["p10"] == one.to_json()["score_stats"]["p90"] == 0.8
    shown = runner.invoke(app, ["report", str(tmp_path)], env={"COLUMNS": "160"}).output
    assert "p10 0.550" in shown and "p90 0.925" in shown and "min 0.500" in shown


def test_stage_timings_are_reported_under_the_pack_files_stage_names(tmp_path: Path) -> None:
    # The manifest records node-id prefixes ("detail", "detect"); the report speaks the pack
    # file's language ("face_detailer", "detection"), for old and new manifests alike.
    build(tmp_path, [JobSpec("s", 1, [Shot(1, 0.6, execution_s=10)])])
    manifest_path = tmp_path / "manifest.json"
    data = json.loads(manifest_path.read_text(encoding="utf-8"))
    (entry,) = data["jobs"].values()
    entry["attempts"][0]["stage_timings"] = {
        "base": 4.0, "detail": 3.0, "detect": 0.5, "face_detailer": 1.0, "upscale": 2.0
    }  # fmt: skip
    manifest_path.write_text(json.dumps(data), encoding="utf-8")
    r = build_report(tmp_path, price_per_hour=1.0)
    assert r.stage_means_s == {
        "base": pytest.approx(4.0),
        "face_detailer": pytest.approx(2.0),  # 3.0 and 1.0: one stage, whatever the spelling
        "detection": pytest.approx(0.5),
        "upscale": pytest.approx(2.0),
    }
