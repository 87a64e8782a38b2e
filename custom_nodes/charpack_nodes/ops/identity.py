"""ArcFace identity scoring with InsightFace on ONNX Runtime.

Owns: checking an InsightFace model pack on disk before InsightFace sees it (InsightFace would
otherwise try to download a missing pack from GitHub, which fails on a pod without access, or
die on an assert), one ``FaceAnalysis`` per (folder, pack, provider) with only the detection
and recognition models, reference embeddings cached by content, and the score itself: the
cosine similarity between the mean reference embedding and the largest face of each image.

No ComfyUI here: the node passes the ``models/insightface`` folder in. Errors are
:class:`IdentityError` subclasses whose message says what is wrong and how to fix it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

log = logging.getLogger("charpack_nodes.identity")

# The two files each pack needs (detector, recogniser), by their upstream names.
PACK_FILES: dict[str, tuple[str, str]] = {
    "buffalo_l": ("det_10g.onnx", "w600k_r50.onnx"),
    "antelopev2": ("scrfd_10g_bnkps.onnx", "glintr100.onnx"),
}
DET_SIZE = (640, 640)
MAX_CACHED_REFERENCES = 32


class IdentityError(ValueError):
    """The identity score cannot be computed; the message names the fix."""


class ModelFilesMissing(IdentityError):
    """An InsightFace pack folder or one of its .onnx files is not where it must be."""


class NoReferenceFace(IdentityError):
    """A reference image has no detectable face."""


class ReferenceFileMissing(IdentityError):
    """A face reference file (a Character's face image) cannot be read."""


def read_picture(path: str, *, name: str) -> np.ndarray:
    """The RGB uint8 pixels of the picture file at ``path`` (``name`` is what the user chose),
    upright as core ``LoadImage`` shows it (EXIF orientation applied)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not os.path.isfile(path):
        raise ReferenceFileMissing(
            f"face image {name!r} is not in ComfyUI's input folder; upload it again or pick "
            "another one on the Character node"
        )
    try:
        with Image.open(path) as picture:
            upright = ImageOps.exif_transpose(picture)
            return np.ascontiguousarray(np.asarray(upright.convert("RGB"), dtype=np.uint8))
    except (OSError, UnidentifiedImageError) as exc:
        raise ReferenceFileMissing(
            f"face image {name!r} cannot be read as a picture ({exc}); save it again as PNG or JPEG"
        ) from None


def check_pack(*, root: str, pack: str) -> str:
    """The pack's folder ``<root>/models/<pack>``, after checking every file it needs."""
    if pack not in PACK_FILES:
        raise ModelFilesMissing(
            f"unknown InsightFace model pack {pack!r}; choose one of {', '.join(PACK_FILES)}"
        )
    folder = os.path.join(root, "models", pack)
    needed = PACK_FILES[pack]
    if not os.path.isdir(folder):
        raise ModelFilesMissing(
            f"InsightFace model pack {pack!r} is missing: folder {folder} does not exist. "
            f"Put {', '.join(needed)} into it (charpack's pod provisioning does this; "
            "see docs/nodes.md)"
        )
    missing = [name for name in needed if not os.path.isfile(os.path.join(folder, name))]
    if missing:
        nested = os.path.join(folder, pack)
        hint = (
            f" The files are one folder too deep ({nested}): move them up into {folder}."
            if os.path.isdir(nested)
            else ""
        )
        raise ModelFilesMissing(
            f"InsightFace model pack {pack!r} is incomplete: {', '.join(missing)} not found in "
            f"{folder}. Put the pack's .onnx files directly in that folder.{hint}"
        )
    return folder


def onnx_providers(provider: str) -> list[str]:
    """ONNX Runtime providers for "CPU" or "CUDA" (CUDA falls back to CPU when missing)."""
    if provider == "CPU":
        return ["CPUExecutionProvider"]
    if provider != "CUDA":
        raise IdentityError(f"unknown provider {provider!r}; choose CPU or CUDA")
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]  # face_analysis warns (once per analyser)


_ANALYSERS: dict[tuple[str, str, str], Any] = {}
_REFERENCES: OrderedDict[tuple[Any, ...], np.ndarray] = OrderedDict()
_LOCK = threading.Lock()


def face_analysis(*, root: str, pack: str, provider: str) -> Any:
    """A prepared ``insightface.app.FaceAnalysis`` (detection + recognition only), cached."""
    check_pack(root=root, pack=pack)
    providers = tuple(onnx_providers(provider))
    key = (os.path.realpath(root), pack, provider)
    with _LOCK:
        cached = _ANALYSERS.get(key)
        if cached is not None:
            return cached
        try:
            from insightface.app import FaceAnalysis
        except ImportError as exc:
            raise IdentityError(
                f"InsightFace is not installed in ComfyUI's Python ({exc}); run "
                "`pip install insightface onnxruntime` in that environment"
            ) from None
        if provider == "CUDA" and "CUDAExecutionProvider" not in providers:
            log.warning(
                "identity score: ONNX Runtime here has no CUDA provider (install "
                "onnxruntime-gpu matching the pod's CUDA); scoring on the CPU instead"
            )
        chatter = io.StringIO()
        # InsightFace reports every model it loads with print(); keep it out of the console.
        folder = os.path.join(root, "models", pack)
        with contextlib.redirect_stdout(chatter):
            try:
                analysis = FaceAnalysis(
                    name=pack,
                    root=root,
                    providers=list(providers),
                    allowed_modules=["detection", "recognition"],
                )
            except AssertionError:
                raise ModelFilesMissing(
                    f"InsightFace found no face detector in {folder}; {PACK_FILES[pack][0]} "
                    "there is not a detection model — replace it with the pack's own file"
                ) from None
            except Exception as exc:
                raise ModelFilesMissing(
                    f"InsightFace could not load the models in {folder} ({exc}); a file is "
                    "damaged or not an ONNX model — download the pack again"
                ) from None
            if "recognition" not in analysis.models:
                raise ModelFilesMissing(
                    f"InsightFace found no recognition model in {folder}; {PACK_FILES[pack][1]} "
                    "there is not an ArcFace model — replace it with the pack's own file"
                )
            analysis.prepare(ctx_id=0, det_size=DET_SIZE)
        log.debug("InsightFace %s loaded with %s: %s", pack, providers, chatter.getvalue())
        _ANALYSERS[key] = analysis
        return analysis


def largest_face_embedding(analysis: Any, rgb: np.ndarray) -> np.ndarray | None:
    """The normalised ArcFace embedding of the largest face in an RGB uint8 picture."""
    faces = analysis.get(np.ascontiguousarray(rgb[:, :, ::-1]))  # InsightFace wants BGR
    if not faces:
        return None
    face = max(faces, key=lambda f: float((f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1])))
    embedding = np.asarray(face.normed_embedding, dtype=np.float32)
    return embedding


def reference_embedding(
    analysis: Any, key: tuple[Any, ...], references: Sequence[np.ndarray]
) -> np.ndarray:
    """Mean of the references' embeddings (renormalised), cached by their pixels."""
    digest = hashlib.sha256()
    for rgb in references:
        digest.update(repr(rgb.shape).encode())
        digest.update(rgb.tobytes())
    cache_key = (*key, digest.hexdigest())
    with _LOCK:
        if cache_key in _REFERENCES:
            _REFERENCES.move_to_end(cache_key)
            return _REFERENCES[cache_key]
    embeddings = []
    for index, rgb in enumerate(references, start=1):
        embedding = largest_face_embedding(analysis, rgb)
        if embedding is None:
            which = f"reference image {index} of {len(references)}"
            raise NoReferenceFace(
                f"no face found in {which} ({rgb.shape[1]}x{rgb.shape[0]}); use a clear, "
                "well-lit photo of the character's face, roughly front-facing and at least "
                "about 100 pixels across"
            )
        embeddings.append(embedding)
    mean = np.mean(embeddings, axis=0)
    mean = mean / max(float(np.linalg.norm(mean)), 1e-12)
    with _LOCK:
        _REFERENCES[cache_key] = mean
        while len(_REFERENCES) > MAX_CACHED_REFERENCES:
            _REFERENCES.popitem(last=False)
    return mean


def score_images(
    *,
    root: str,
    pack: str,
    provider: str,
    references: Sequence[np.ndarray],
    images: Sequence[np.ndarray],
) -> list[float | None]:
    """Cosine similarity of each image's largest face to the references; None = no face."""
    analysis = face_analysis(root=root, pack=pack, provider=provider)
    key = (os.path.realpath(root), pack, provider)
    target = reference_embedding(analysis, key, references)
    scores: list[float | None] = []
    for rgb in images:
        embedding = largest_face_embedding(analysis, rgb)
        scores.append(None if embedding is None else float(np.dot(target, embedding)))
    return scores
