"""Which execution errors a new seed can change: the rest fail the job at once, with the fix."""

from __future__ import annotations

import pytest

from charpack.comfy.results import NodeFailure
from charpack.run.retry_rules import seed_cannot_fix


@pytest.mark.parametrize(
    ("node_type", "exception_type", "message", "fix"),
    [
        ("ApplyInstantID", "Exception", "Reference Image: No face detected.", "face reference"),
        ("IPAdapterFaceID", "Exception", "InsightFace: No face detected.", "face reference"),
        ("CharpackIdentityScore", "ValueError",
         "CharpackIdentityScore: no face found in reference image 1 of 1 (256x256)",
         "face reference"),
        ("CharpackSavePack", "ValueError",
         "CharpackSavePack: scene 'con' is a reserved device name on Windows", "saver refused"),
        ("IPAdapterUnifiedLoaderFaceID", "Exception", "IPAdapter model not found.", "model file"),
        ("UpscaleModelLoader", "FileNotFoundError",
         "Model in folder 'upscale_models' with filename 'x.pth' not found.", "model file"),
        ("CheckpointLoaderSimple", "RuntimeError",
         "ERROR: Could not detect model type of: bigLoveXL.safetensors", "model file"),
        ("ImageScale", "ValueError", "width 99999 is out of range", "out of the node's range"),
    ],
)  # fmt: skip
def test_errors_every_seed_would_hit_again_name_their_fix(
    node_type: str, exception_type: str, message: str, fix: str
) -> None:
    found = seed_cannot_fix(NodeFailure("n", node_type, exception_type, message))
    assert found is not None and fix in found


@pytest.mark.parametrize(
    ("node_type", "exception_type", "message"),
    [
        ("KSampler", "OutOfMemoryError", "CUDA out of memory. Tried to allocate 2.00 GiB"),
        ("FaceDetailer", "RuntimeError", "Allocation on device"),
        ("KSampler", None, "execution_interrupted"),
        ("CharpackBench", "ValueError", "CharpackBench: prefix '../x' leaves the output folder"),
    ],
)
def test_transient_or_unknown_errors_are_retried(
    node_type: str, exception_type: str | None, message: str
) -> None:
    assert seed_cannot_fix(NodeFailure("n", node_type, exception_type, message)) is None
    assert seed_cannot_fix(None) is None
