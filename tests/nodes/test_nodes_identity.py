"""The identity score runs InsightFace's real loading path (``FaceAnalysis`` from
``models/insightface``) on the test world's tiny ONNX models, which have the real detector's and
ArcFace recogniser's input/output shapes and really find the drawn faces."""

from __future__ import annotations

import logging
import os
import shutil

import numpy as np
import pytest

from charpack_nodes.nodes_identity import CharpackIdentityScore
from charpack_nodes.ops import identity
from tests.comfy.standins import faces
from tests.nodes.helpers import ComfyDirs, call_node, face_picture, stranger, to_tensor


def score(
    images: object, reference: object, *, pack: str = "buffalo_l", provider: str = "CPU"
) -> object:
    return call_node(
        CharpackIdentityScore,
        unique_id="9",
        images=images,
        reference=reference,
        model_pack=pack,
        provider=provider,
    )


@pytest.mark.parametrize("pack", ["buffalo_l", "antelopev2"])
def test_same_face_scores_high_and_strangers_lower(comfy_dirs: ComfyDirs, pack: str) -> None:
    reference = to_tensor(face_picture())
    images = to_tensor(
        face_picture(),
        face_picture(faces.AVA.turned(0.3)),
        face_picture(stranger(1)),
        face_picture(stranger(2)),
    )
    out = score(images, reference, pack=pack)
    same, turned, other1, other2 = out.ui["scores"]
    assert same > 0.99 and turned > 0.85
    assert max(other1, other2) < min(same, turned) - 0.1
    assert out.args[0] is images, "the images pass through unchanged"
    assert out.args[1] == min(out.ui["scores"]), "the FLOAT output is the batch's lowest score"
    assert out.ui["warnings"] == [] and out.ui["model_pack"] == [pack]


def test_several_references_are_averaged_into_one_identity(comfy_dirs: ComfyDirs) -> None:
    front, side = face_picture(), face_picture(faces.AVA.turned(0.35))
    image = face_picture(faces.AVA.turned(-0.2))
    root = str(comfy_dirs.insightface)
    analysis = identity.face_analysis(root=root, pack="buffalo_l", provider="CPU")
    embeddings = [
        identity.largest_face_embedding(analysis, np.asarray(p)) for p in (front, side, image)
    ]
    mean = embeddings[0] + embeddings[1]
    expected = float(np.dot(mean / np.linalg.norm(mean), embeddings[2]))
    out = score(to_tensor(image), to_tensor(front, side))
    assert out.ui["scores"][0] == pytest.approx(expected, abs=1e-5)


def test_an_image_without_a_face_is_no_face_not_a_score_with_a_warning_and_is_kept(
    comfy_dirs: ComfyDirs, caplog: pytest.LogCaptureFixture
) -> None:
    images = to_tensor(face_picture(), faces.landscape((256, 256)))
    with caplog.at_level(logging.WARNING, logger="charpack_nodes"):
        out = score(images, to_tensor(face_picture()))
    assert out.ui["scores"][1] is None and out.ui["faces"] == [True, False]
    assert out.ui["scores"][0] > 0.5 and out.args[1] == 0.0  # the FLOAT output must be a number
    assert out.ui["warnings"] == [
        "no face found in image 2 of 2; no score, so an identity gate retries it with another seed"
    ]
    assert "no face found in image 2 of 2" in caplog.text
    assert out.args[0] is images


def test_a_reference_without_a_face_stops_with_the_fix(comfy_dirs: ComfyDirs) -> None:
    with pytest.raises(ValueError) as caught:
        score(to_tensor(face_picture()), to_tensor(faces.landscape((200, 240))))
    message = str(caught.value)
    assert message.startswith("CharpackIdentityScore: no face found in reference image 1 of 1")
    assert "(input 'reference')" in message and "photo of the character's face" in message


def test_a_missing_model_file_names_the_file_and_the_folder(comfy_dirs: ComfyDirs) -> None:
    pack = comfy_dirs.insightface / "models" / "buffalo_l"
    (pack / "w600k_r50.onnx").unlink()
    with pytest.raises(ValueError) as caught:
        score(to_tensor(face_picture()), to_tensor(face_picture()))
    assert str(caught.value) == (
        "CharpackIdentityScore: InsightFace model pack 'buffalo_l' is incomplete: "
        f"w600k_r50.onnx not found in {pack}. Put the pack's .onnx files directly in that folder."
    )


def test_a_nested_pack_folder_is_recognised_and_the_fix_given(comfy_dirs: ComfyDirs) -> None:
    pack = comfy_dirs.insightface / "models" / "antelopev2"
    nested = pack / "antelopev2"
    nested.mkdir()
    for item in list(pack.glob("*.onnx")):
        shutil.move(item, nested / item.name)
    with pytest.raises(ValueError, match="one folder too deep") as caught:
        score(to_tensor(face_picture()), to_tensor(face_picture()), pack="antelopev2")
    assert f"move them up into {pack}" in str(caught.value)


def test_a_missing_pack_folder_never_triggers_a_download(comfy_dirs: ComfyDirs) -> None:
    shutil.rmtree(comfy_dirs.insightface / "models" / "antelopev2")
    with pytest.raises(ValueError, match="folder .* does not exist"):
        score(to_tensor(face_picture()), to_tensor(face_picture()), pack="antelopev2")
    assert not os.path.exists(comfy_dirs.insightface / "models" / "antelopev2.zip")


def test_a_file_that_is_not_a_detector_is_reported(comfy_dirs: ComfyDirs) -> None:
    pack = comfy_dirs.insightface / "models" / "buffalo_l"
    shutil.copy(pack / "w600k_r50.onnx", pack / "det_10g.onnx")  # a recogniser in its place
    with pytest.raises(
        ValueError, match="no face detector in .*det_10g.onnx there is not a detection model"
    ):
        score(to_tensor(face_picture()), to_tensor(face_picture()))


def test_the_analyser_and_reference_embeddings_are_loaded_once(
    comfy_dirs: ComfyDirs, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = str(comfy_dirs.insightface)
    first = identity.face_analysis(root=root, pack="buffalo_l", provider="CPU")
    assert identity.face_analysis(root=root, pack="buffalo_l", provider="CPU") is first
    calls = []
    real = identity.largest_face_embedding

    def counting(analysis: object, rgb: np.ndarray) -> object:
        calls.append(rgb.shape)
        return real(analysis, rgb)

    monkeypatch.setattr(identity, "largest_face_embedding", counting)
    reference = to_tensor(face_picture(faces.AVA.turned(0.1)))
    score(to_tensor(face_picture()), reference)
    score(to_tensor(face_picture(size=300)), reference)
    assert len(calls) == 3, "the reference is embedded once, each image once"


def test_cuda_on_a_cpu_only_onnx_runtime_falls_back_with_a_warning(
    comfy_dirs: ComfyDirs, caplog: pytest.LogCaptureFixture
) -> None:
    images, reference = to_tensor(face_picture(stranger(4))), to_tensor(face_picture())
    with caplog.at_level(logging.WARNING, logger="charpack_nodes"):
        on_cuda = score(images, reference, provider="CUDA")
    assert "no CUDA provider" in caplog.text
    assert on_cuda.ui["scores"] == score(images, reference).ui["scores"]


def character_with(comfy_dirs: ComfyDirs, *names: str) -> object:
    from charpack_nodes.ops import specs

    return specs.character_spec(
        ckpt_name="bigLoveXL.safetensors", lora_name="None", lora_strength=0.7, trigger="",
        face_image=names[0], face_image_2=names[1] if len(names) > 1 else None,
    )  # fmt: skip


def score_with(images: object, **references: object) -> object:
    return call_node(
        CharpackIdentityScore, unique_id="9", images=images, model_pack="buffalo_l",
        provider="CPU", **references,
    )  # fmt: skip


def test_the_characters_face_files_are_the_reference_without_a_loader(
    comfy_dirs: ComfyDirs,
) -> None:
    front, side = face_picture(), face_picture(faces.AVA.turned(0.35))
    front.save(comfy_dirs.input / "front.png")
    side.save(comfy_dirs.input / "side.png")
    images = to_tensor(face_picture(faces.AVA.turned(-0.2)), face_picture(stranger(3)))
    by_character = score_with(images, character=character_with(comfy_dirs, "front.png", "side.png"))
    by_reference = score_with(images, reference=to_tensor(front, side))
    assert by_character.ui["scores"] == pytest.approx(by_reference.ui["scores"], abs=1e-5)
    assert by_character.args[0] is images
    both = score_with(
        images, reference=to_tensor(side), character=character_with(comfy_dirs, "front.png")
    )
    assert both.ui["scores"] == pytest.approx(by_reference.ui["scores"], abs=1e-5), "all averaged"


def test_the_score_is_written_for_the_node_to_show(comfy_dirs: ComfyDirs) -> None:
    images = to_tensor(face_picture(), faces.landscape((256, 256)))
    out = score_with(images, reference=to_tensor(face_picture()))
    first = out.ui["scores"][0]
    assert out.ui["text"] == [
        f"score 0.000 (lowest of 2): {first:.3f}, no face",
        "no face found in image 2 of 2; no score, so an identity gate retries it with another seed",
    ]
    single = score_with(to_tensor(face_picture()), reference=to_tensor(face_picture()))
    assert single.ui["text"] == [f"score {single.ui['scores'][0]:.3f} (lowest of 1)"]


def test_without_character_or_reference_the_error_names_both_inputs(
    comfy_dirs: ComfyDirs,
) -> None:
    with pytest.raises(ValueError) as caught:
        score_with(to_tensor(face_picture()))
    assert str(caught.value) == (
        "CharpackIdentityScore: no reference face: connect input 'character' (a Character "
        "node) or input 'reference' (face images, e.g. from LoadImage)"
    )


def test_a_characters_face_file_gone_since_queueing_names_the_file_and_the_input(
    comfy_dirs: ComfyDirs,
) -> None:
    with pytest.raises(ValueError) as caught:
        score_with(to_tensor(face_picture()), character=character_with(comfy_dirs, "gone.png"))
    message = str(caught.value)
    assert message.startswith("CharpackIdentityScore: face image 'gone.png' is not in ComfyUI's")
    assert message.endswith("(input 'character')")


def test_a_characters_face_file_without_a_face_names_the_character_input(
    comfy_dirs: ComfyDirs,
) -> None:
    faces.landscape((200, 240)).save(comfy_dirs.input / "hills.png")
    with pytest.raises(ValueError, match=r"no face found in reference image 1 of 1 .*'character'"):
        score_with(to_tensor(face_picture()), character=character_with(comfy_dirs, "hills.png"))
