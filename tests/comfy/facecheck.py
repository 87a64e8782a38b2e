"""Find and compare faces in pictures with real InsightFace on the tiny models, from any test.

    python -m tests.comfy.facecheck --root <insightface root> [--pack buffalo_l] REF [IMAGE ...]

prints one JSON line per picture: its faces (box, detection score) and the ArcFace cosine
similarity of its largest face to the largest face of REF (null without faces). It runs in the
ComfyUI test environment (InsightFace is not a project dependency); ``check_faces`` calls it
from the project's tests. It loads the models exactly as a user would:
``FaceAnalysis(name=pack, root=root, providers=["CPUExecutionProvider"])``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path
from typing import Any

from tests.comfy.install import REPO, ComfyEnv


def analyse(paths: list[Path], *, root: Path, pack: str = "buffalo_l") -> list[dict[str, Any]]:
    """Faces and similarity to the first picture's face, for every picture (in this process)."""
    import numpy as np
    from insightface.app import FaceAnalysis
    from PIL import Image

    analysis = FaceAnalysis(name=pack, root=str(root), providers=["CPUExecutionProvider"])
    analysis.prepare(ctx_id=0, det_size=(640, 640))
    results: list[dict[str, Any]] = []
    reference = None
    for path in paths:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        found = analysis.get(np.ascontiguousarray(rgb[:, :, ::-1]))
        found.sort(key=lambda f: -(f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1]))
        embedding = found[0].normed_embedding if found else None
        if reference is None and path == paths[0]:
            reference = embedding
        similarity = None
        if embedding is not None and reference is not None:
            similarity = float(np.dot(embedding, reference))
        results.append({
            "path": str(path),
            "faces": [{"bbox": [round(float(v), 1) for v in f.bbox],
                       "det_score": round(float(f.det_score), 4)} for f in found],
            "similarity": similarity,
        })  # fmt: skip
    return results


def check_faces(
    env: ComfyEnv, reference: Path, *images: Path, pack: str = "buffalo_l"
) -> list[dict[str, Any]]:
    """``analyse`` run in the ComfyUI environment; one result per picture, reference first."""
    command = [str(env.python), "-m", "tests.comfy.facecheck", "--root", str(env.insightface_root),
               "--pack", pack, str(reference), *map(str, images)]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"facecheck failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="InsightFace root folder")
    parser.add_argument("--pack", default="buffalo_l", help="model pack (buffalo_l, antelopev2)")
    parser.add_argument("pictures", type=Path, nargs="+", help="reference first, then pictures")
    args = parser.parse_args()
    for result in analyse(args.pictures, root=args.root, pack=args.pack):
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
