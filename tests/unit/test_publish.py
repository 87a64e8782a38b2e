"""charpack publish: the copies carry no prompt, workflow or parameters, and the same pixels."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import typer
from PIL import Image, ImageCms
from typer.testing import CliRunner

from charpack.cli import pack as cli_pack
from charpack.folder.manifest import Manifest, ManifestError
from charpack.folder.publish import PNG_KEEP, PublishError, publish, strip_file
from tests.support.pack_folders import SECRET_PROMPT, small_pack

app = typer.Typer()
app.command()(cli_pack.publish)
app.command()(cli_pack.report)
runner = CliRunner()

XMP = f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description>{SECRET_PROMPT}</rdf:Description>'


def png_chunks(path: Path) -> list[bytes]:
    data = path.read_bytes()
    pos, kinds = 8, []
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        kinds.append(kind)
        pos += 12 + length
    return kinds


def pixels(path: Path) -> bytes:
    with Image.open(path) as img:
        return img.tobytes()


def test_published_pngs_keep_the_pixels_and_lose_every_text_chunk(tmp_path: Path) -> None:
    small_pack(tmp_path)
    source = tmp_path / "cafe-terrace" / "cafe-terrace_001_101.png"
    assert {b"tEXt", b"zTXt", b"iTXt", b"eXIf"} <= set(png_chunks(source))  # the test's premise
    result = publish(tmp_path)
    published = tmp_path / "publish" / "cafe-terrace" / "cafe-terrace_001_101.png"
    assert published in result.written
    assert set(png_chunks(published)) <= PNG_KEEP
    raw = published.read_bytes()
    assert SECRET_PROMPT.encode() not in raw and b"workflow" not in raw and b"parameters" not in raw
    with Image.open(published) as img:
        assert img.text == {} and "exif" not in img.info
    assert pixels(published) == pixels(source)
    assert result.bytes_removed > 0 and result.changed == [] and result.missing == []


def test_only_accepted_images_are_published_in_the_same_layout(tmp_path: Path) -> None:
    small_pack(tmp_path)
    (tmp_path / "cafe-terrace" / "cafe-terrace_001_101.json").write_text("{}")  # server sidecar
    publish(tmp_path)
    names = sorted(
        p.relative_to(tmp_path / "publish").as_posix()
        for p in (tmp_path / "publish").rglob("*")
        if p.is_file()
    )
    assert names == [
        "cafe-terrace/cafe-terrace_001_101.png",
        "cafe-terrace/cafe-terrace_002_203.png",
        "cafe-terrace/cafe-terrace_003_303.png",
        "city-walk/city-walk_002_505.png",
        "city-walk/city-walk_003_606.png",
    ]  # no rejected attempt, no sidecar, nothing from failed or pending jobs


def test_jpeg_and_webp_lose_exif_xmp_and_comments_but_keep_colour(tmp_path: Path) -> None:
    img = Image.radial_gradient("L").convert("RGB").resize((96, 128))
    exif = Image.Exif()
    exif[0x010E] = SECRET_PROMPT
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    meta = {"exif": exif.tobytes(), "xmp": XMP.encode(), "icc_profile": icc}
    img.save(tmp_path / "a.jpg", quality=90, comment=SECRET_PROMPT.encode(), **meta)
    img.save(tmp_path / "a.webp", lossless=True, **meta)
    for name in ("a.jpg", "a.webp"):
        source, dest = tmp_path / name, tmp_path / "out" / name
        assert SECRET_PROMPT.encode() in source.read_bytes()  # the test's premise
        strip_file(source, dest)
        assert SECRET_PROMPT.encode() not in dest.read_bytes(), name
        with Image.open(dest) as out:
            assert not {"exif", "xmp", "comment"} & set(out.info), (name, set(out.info))
            assert out.info["icc_profile"] == icc, name
        assert pixels(dest) == pixels(source), name


def test_a_changed_image_is_reported_and_a_missing_one_fails_the_command(tmp_path: Path) -> None:
    small_pack(tmp_path)
    changed = tmp_path / "city-walk" / "city-walk_002_505.png"
    with Image.open(changed) as img:
        img.rotate(180).save(changed)  # retouched after the run
    (tmp_path / "cafe-terrace" / "cafe-terrace_003_303.png").unlink()
    out = runner.invoke(app, ["publish", str(tmp_path), "--json"])
    assert out.exit_code == 2
    data = json.loads(out.output)
    assert data["missing"] == ["cafe-terrace/cafe-terrace_003_303.png"]
    assert data["changed"] == ["city-walk/city-walk_002_505.png"]
    assert len(data["written"]) == 4  # everything else is still published


def test_unpublishable_files_and_escaping_paths_are_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(PublishError, match="cannot publish .txt files — charpack publishes PNG"):
        strip_file(tmp_path / "notes.txt", tmp_path / "out.txt")
    (tmp_path / "fake.png").write_bytes(b"GIF89a....")
    with pytest.raises(PublishError, match="not a PNG file"):
        strip_file(tmp_path / "fake.png", tmp_path / "out.png")
    good = tmp_path / "good.png"
    Image.new("RGB", (64, 64), (10, 20, 30)).save(good)
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:-20])
    with pytest.raises(PublishError, match="truncated — re-download"):
        strip_file(tmp_path / "cut.png", tmp_path / "cut-out.png")
    assert not (tmp_path / "cut-out.png").exists() and not list(tmp_path.glob(".*.tmp"))

    pack = tmp_path / "pack"
    manifest = small_pack(pack)
    entry = manifest.job("cafe-terrace/001")
    entry["image"] = "../../outside.png"
    manifest.put(entry)
    manifest.save()
    with pytest.raises(ManifestError, match="points outside the pack folder"):
        publish(Manifest.load(pack).folder)
