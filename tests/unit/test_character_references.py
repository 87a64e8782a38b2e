"""Face references: every bad file is named with its fix; a good set passes."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from charpack.character.references import check_references, face_problems


def _photo(path: Path, size: tuple[int, int] = (640, 768), fmt: str = "PNG", seed: int = 0) -> Path:
    Image.new("RGB", size, (120 + seed, 90, 70)).save(path, fmt)
    return path


def _good_set(folder: Path, n: int = 3) -> list[Path]:
    kinds = [("PNG", "png"), ("JPEG", "jpg"), ("WEBP", "webp"), ("PNG", "png"), ("JPEG", "jpg")]
    return [
        _photo(folder / f"face{i}.{ext}", fmt=fmt, seed=i) for i, (fmt, ext) in enumerate(kinds[:n])
    ]


def test_three_to_five_good_pictures_pass(tmp_path: Path) -> None:
    assert check_references(_good_set(tmp_path, 3)) == []
    assert check_references(_good_set(tmp_path, 5)) == []


def test_too_few_and_too_many_say_how_many_to_add_or_remove(tmp_path: Path) -> None:
    [few] = check_references(_good_set(tmp_path, 2))
    assert few.code == "reference.too_few" and "add 1 more" in few.fix
    extra = [*_good_set(tmp_path, 5), _photo(tmp_path / "six.png", seed=9)]
    [many] = check_references(extra)
    assert many.code == "reference.too_many" and "keep the 5" in many.fix


def test_format_is_judged_by_content_not_by_name(tmp_path: Path) -> None:
    refs = _good_set(tmp_path, 3)
    gif = tmp_path / "face.png"  # a GIF named .png
    Image.new("RGB", (600, 600)).save(gif, "GIF")
    renamed = _photo(tmp_path / "really-a-jpeg.png", fmt="JPEG", seed=7)
    problems = check_references([*refs[:2], gif, renamed][:5])
    assert [(p.code, p.location) for p in problems] == [("reference.format", str(gif))]
    assert "convert it to PNG or JPEG" in str(problems[0])


def test_small_large_broken_missing_and_duplicate_files_are_each_named(tmp_path: Path) -> None:
    small = _photo(tmp_path / "small.jpg", (800, 500), "JPEG")
    broken = tmp_path / "broken.png"
    broken.write_bytes(_photo(tmp_path / "whole.png", seed=3).read_bytes()[:200])
    large = tmp_path / "large.png"
    large.write_bytes(_photo(tmp_path / "l.png").read_bytes() + b"\0" * (10 * 1024 * 1024))
    missing = tmp_path / "gone.png"
    good = _photo(tmp_path / "good.png", seed=5)
    copy = tmp_path / "copy.png"
    copy.write_bytes(good.read_bytes())
    problems = check_references([small, broken, large, missing, good, copy])
    by_file = {p.location: p for p in problems}
    assert (
        by_file[str(small)].code == "reference.too_small"
        and "800×500" in by_file[str(small)].message
    )
    assert by_file[str(broken)].code == "reference.unreadable"
    assert (
        by_file[str(large)].code == "reference.too_large" and "10 MB" in by_file[str(large)].message
    )
    assert by_file[str(missing)].code == "reference.missing"
    assert (
        by_file[str(copy)].code == "reference.duplicate"
        and "good.png" in by_file[str(copy)].message
    )
    assert str(good) not in by_file
    assert problems[0].code == "reference.too_many"


def test_face_checks_flag_no_face_and_several_faces() -> None:
    checks = [
        {"label": "a.png", "count": 1, "det_scores": [0.9]},
        {"label": "b.png", "count": 0, "det_scores": []},
        {"label": "c.png", "count": 2, "det_scores": [0.8, 0.7]},
    ]
    problems = face_problems(checks)
    assert [(p.code, p.location) for p in problems] == [
        ("reference.no_face", "b.png"),
        ("reference.many_faces", "c.png"),
    ]
    assert "crop" in problems[1].fix and "2 faces" in problems[1].message
