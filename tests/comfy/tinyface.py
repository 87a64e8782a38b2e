"""Tiny hand-built ONNX face models with the shapes of InsightFace's SCRFD and ArcFace.

Owns the two model graphs the test world puts into ``models/insightface/models/<pack>/``:

* a **detector** with SCRFD's interface (input ``[1, 3, H, W]``, nine outputs: scores, box
  distances and five key points for strides 8/16/32, two anchors per cell), which InsightFace 0.7.3
  routes to its ``RetinaFace``/SCRFD decoder because it has nine outputs. It finds the eyes of the
  test world's drawn faces (``standins/faces.py``): white, flat ellipses side by side. For every
  anchor it measures the white pixels left and right of it (mass, centroid, vertical spread), so a
  face is two balanced, flat, level white blobs whose distance fits the stride; box and key points
  follow from the renderer's fixed proportions. Images without such eyes give no detection.
* a **recogniser** with ArcFace's interface (``[1, 3, 112, 112]`` -> ``[1, 512]``), routed to
  ``ArcFaceONNX``. On the aligned crop it takes the mean colour of a few identity regions (skin,
  hair, iris, lips), standardises them against the population of drawn faces and spreads them
  over 512 dimensions with a seeded random projection (which keeps cosine similarities): renders
  of one face score high whatever the pose, size or backdrop; different faces score low unless
  they share colours (look-alikes).

The weights are computed, not trained: deterministic and built in well under a second. Runs in the
ComfyUI test environment (numpy, onnx, opencv and insightface's ``face_align``).
"""

from __future__ import annotations

import math
import random

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
STRIDES = (8, 16, 32)
# Eye distances (pixels of the detector input) each stride looks for; neighbours overlap.
EYE_RANGE = {s: (3.5 * s, 8.0 * s) for s in STRIDES}
CELL = 2  # the white-pixel mask is summed over CELL x CELL cells first
# "White" in the normalised input ((pixel - 127.5) / 128): min channel >= 190, spread <= 45.
# Low enough that the blurred eyes of a small picture scaled up to the detector size still count.
WHITE_MIN = (190 - 127.5) / 128
WHITE_SPREAD = 45 / 128
# Face proportions in eye distances (match standins/faces.py).
NOSE_DOWN, MOUTH_DOWN, MOUTH_HALF = 0.57, 1.16, 0.41
BOX_LEFT, BOX_UP, BOX_DOWN = 1.2, 1.05, 1.95
TURN_SHRINK = 0.45  # the far eye's width factor per unit of head turn
EMBED_DIM = 512


class _Graph:
    """A small helper that names nodes and collects initialisers."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._count = 0
        self.probes: dict[str, str] = {}  # label -> tensor name, for debugging a model by hand

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, value: np.ndarray | float, hint: str = "c") -> str:
        name = self.name(hint)
        array = np.asarray(value, dtype=np.int64 if hint == "shape" else np.float32)
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def op(self, op_type: str, *inputs: str, hint: str | None = None, **attrs: object) -> str:
        out = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out

    def ops(self, op_type: str, inputs: list[str], n_out: int, **attrs: object) -> list[str]:
        outs = [self.name(op_type.lower()) for _ in range(n_out)]
        node = helper.make_node(op_type, inputs, outs, name=self.name(op_type.lower()), **attrs)
        self.nodes.append(node)
        return outs

    def ramp(self, value: str, lo: float, hi: float) -> str:
        """0 below ``lo``, 1 above ``hi``, linear between (``lo > hi`` gives a falling ramp)."""
        scaled = self.op("Mul", self.op("Sub", value, self.const(lo)), self.const(1.0 / (hi - lo)))
        return self.op("Clip", scaled, self.const(0.0), self.const(1.0))


def _window_kernels(stride: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Separable kernels (vertical, horizontal) for the eye windows of one stride."""
    d_hi = EYE_RANGE[stride][1]
    half_w = math.ceil((0.74 * d_hi + stride / 2) / CELL)
    half_h = math.ceil((0.4 * d_hi + stride / 2) / CELL)
    kh, kw = 2 * half_h, 2 * half_w
    # Cell centres relative to the anchor, in pixels.
    ys = (np.arange(kh) - half_h + 0.5) * CELL
    xs = (np.arange(kw) - half_w + 0.5) * CELL
    vertical = np.stack([np.ones(kh), ys, ys**2])[:, None, :, None]  # [3, 1, kh, 1]
    left, right = (xs < 0).astype(np.float64), (xs > 0).astype(np.float64)
    # Outputs: mass L/R, sum x L/R, sum y L/R, sum y^2 L/R, sum x^2 L/R.
    rows_and_weights = [(0, left), (0, right), (0, left * xs), (0, right * xs)]
    rows_and_weights += [(1, left), (1, right), (2, left), (2, right)]
    rows_and_weights += [(0, left * xs**2), (0, right * xs**2)]
    horizontal = np.zeros((len(rows_and_weights), 3, 1, kw))
    for out, (row, weights) in enumerate(rows_and_weights):
        horizontal[out, row, 0, :] = weights
    return vertical.astype(np.float32), horizontal.astype(np.float32), kh, kw


def _level(g: _Graph, white: str, stride: int) -> tuple[str, str, str]:
    """Score, box and key-point maps ([1, C, H/s, W/s]) for one stride."""
    vertical, horizontal, kh, kw = _window_kernels(stride)
    step = stride // CELL
    rows = g.op(
        "Conv", white, g.const(vertical), strides=[step, 1], pads=[kh // 2, 0, kh // 2 - step, 0]
    )
    moments = g.op(
        "Conv", rows, g.const(horizontal), strides=[1, step], pads=[0, kw // 2, 0, kw // 2 - step]
    )
    m_l, m_r, sx_l, sx_r, sy_l, sy_r, syy_l, syy_r, sxx_l, sxx_r = g.ops(
        "Split", [moments], 10, axis=1
    )
    eps = g.const(1e-3)
    safe_l, safe_r = g.op("Max", m_l, eps), g.op("Max", m_r, eps)
    x_l, x_r = g.op("Div", sx_l, safe_l), g.op("Div", sx_r, safe_r)
    y_l, y_r = g.op("Div", sy_l, safe_l), g.op("Div", sy_r, safe_r)
    var_l = g.op("Sub", g.op("Div", syy_l, safe_l), g.op("Mul", y_l, y_l))
    var_r = g.op("Sub", g.op("Div", syy_r, safe_r), g.op("Mul", y_r, y_r))
    wide_l = g.op("Sub", g.op("Div", sxx_l, safe_l), g.op("Mul", x_l, x_l))
    wide_r = g.op("Sub", g.op("Div", sxx_r, safe_r), g.op("Mul", x_r, x_r))
    dist = g.op("Max", g.op("Sub", x_r, x_l), g.const(1.0))
    half = g.const(0.5)
    ox, oy = g.op("Mul", g.op("Add", x_l, x_r), half), g.op("Mul", g.op("Add", y_l, y_r), half)
    dist2 = g.op("Mul", dist, dist)
    m_min, m_max = g.op("Min", m_l, m_r), g.op("Max", m_l, m_r)

    d_lo, d_hi = EYE_RANGE[stride]
    spread = g.op("Div", g.op("Sqrt", g.op("Max", g.op("Max", var_l, var_r), g.const(0.0))), dist)
    width = g.op("Div", g.op("Sqrt", g.op("Max", g.op("Max", wide_l, wide_r), g.const(0.0))), dist)
    tilt = g.op("Div", g.op("Abs", g.op("Sub", y_l, y_r)), dist)
    offset2 = g.op("Add", g.op("Mul", ox, ox), g.op("Mul", oy, oy))
    factors = [
        g.ramp(dist, 0.9 * d_lo, d_lo),
        g.ramp(dist, 1.1 * d_hi, d_hi),
        g.ramp(g.op("Div", m_min, dist2), 0.004, 0.01),  # both eyes carry enough white
        g.ramp(g.op("Div", m_max, dist2), 0.2, 0.15),  # ... but no big white patch
        g.ramp(g.op("Div", m_min, g.op("Max", m_max, eps)), 0.25, 0.4),  # balanced
        g.ramp(spread, 0.16, 0.12),  # eyes are flat: not one eye cut in two
        g.ramp(width, 0.25, 0.2),  # one eye per side, not an eye and a half
        g.ramp(tilt, 0.15, 0.08),  # level
        g.op("Exp", g.op("Mul", offset2, g.const(-1.0 / (2.0 * stride * stride)))),  # centred
    ]
    labels = ("near", "far", "mass", "patch", "balance", "flat", "one_each", "level", "centred")
    g.probes.update(
        {f"{label}_{stride}": name for label, name in zip(labels, factors, strict=True)}
    )
    score = factors[0]
    for factor in factors[1:]:
        score = g.op("Mul", score, factor)

    # Head turn from the eye masses: the far eye is narrower.
    turn = g.op(
        "Div", g.op("Sub", m_l, m_r), g.op("Mul", g.op("Max", m_max, eps), g.const(TURN_SHRINK))
    )
    turn = g.op("Clip", turn, g.const(-1.0), g.const(1.0))

    def along(base: str, factor: float, of: str = dist) -> str:
        return g.op("Add", base, g.op("Mul", of, g.const(factor)))

    inv = g.const(1.0 / stride)
    box = [
        g.op("Sub", g.op("Mul", dist, g.const(BOX_LEFT)), ox),
        g.op("Sub", g.op("Mul", dist, g.const(BOX_UP)), oy),
        along(ox, BOX_LEFT),
        along(oy, BOX_DOWN),
    ]
    turn_d = g.op("Mul", turn, dist)
    mouth_half = g.op(
        "Mul",
        dist,
        g.op("Sub", g.const(MOUTH_HALF), g.op("Mul", g.op("Abs", turn), g.const(0.2 * MOUTH_HALF))),
    )
    mouth_x = along(ox, 0.15, turn_d)
    mouth_y = along(oy, MOUTH_DOWN)
    kps = [
        x_l, y_l, x_r, y_r,
        along(ox, 0.35, turn_d), along(oy, NOSE_DOWN),
        g.op("Sub", mouth_x, mouth_half), mouth_y,
        g.op("Add", mouth_x, mouth_half), mouth_y,
    ]  # fmt: skip
    box_map = g.op("Mul", g.op("Concat", *box, axis=1), inv)
    kps_map = g.op("Mul", g.op("Concat", *kps, axis=1), inv)
    return score, box_map, kps_map


def _per_anchor(g: _Graph, fmap: str, channels: int, out_name: str) -> None:
    """[1, C, h, w] -> [h*w*2, C] in SCRFD's order (cells row-major, two anchors per cell)."""
    cells = g.op("Unsqueeze", g.op("Transpose", fmap, perm=[0, 2, 3, 1]), g.const([3], "shape"))
    both = g.op("Concat", cells, cells, axis=3)
    g.nodes.append(
        helper.make_node("Reshape", [both, g.const([-1, channels], "shape")], [out_name])
    )


def detector(*, probes: bool = False) -> onnx.ModelProto:
    """The SCRFD-shaped eye-pair detector (``probes`` adds each score factor as an output)."""
    g = _Graph()
    image = "input.1"
    red, green, blue = g.ops("Split", [image], 3, axis=1)
    low = g.op("Min", red, green, blue)
    high = g.op("Max", red, green, blue)
    is_white = g.op(
        "And",
        g.op("GreaterOrEqual", low, g.const(WHITE_MIN)),
        g.op("LessOrEqual", g.op("Sub", high, low), g.const(WHITE_SPREAD)),
    )
    white = g.op("Cast", is_white, to=TensorProto.FLOAT)
    cells = g.op(
        "Mul",
        g.op("AveragePool", white, kernel_shape=[CELL, CELL], strides=[CELL, CELL]),
        g.const(float(CELL * CELL)),
    )
    outputs: dict[str, list[tuple[str, str, int]]] = {"score": [], "bbox": [], "kps": []}
    for stride in STRIDES:
        score, box, kps = _level(g, cells, stride)
        outputs["score"].append((score, f"score_{stride}", 1))
        outputs["bbox"].append((box, f"bbox_{stride}", 4))
        outputs["kps"].append((kps, f"kps_{stride}", 10))
    out_infos = []
    for kind in ("score", "bbox", "kps"):
        for fmap, name, channels in outputs[kind]:
            _per_anchor(g, fmap, channels, name)
            out_infos.append(
                helper.make_tensor_value_info(name, TensorProto.FLOAT, [None, channels])
            )
    if probes:
        for label, name in g.probes.items():
            g.nodes.append(helper.make_node("Identity", [name], [label]))
            out_infos.append(
                helper.make_tensor_value_info(label, TensorProto.FLOAT, [1, 1, None, None])
            )
    inp = helper.make_tensor_value_info(image, TensorProto.FLOAT, [1, 3, "height", "width"])
    graph = helper.make_graph(g.nodes, "tiny_scrfd", [inp], out_infos, g.inits)
    return _finish(graph)


# Identity regions of an aligned 112x112 crop (ArcFace template: eyes at y=51.6, mouth at y=92.3),
# as (x1, y1, x2, y2) boxes per feature; each feature is the mean colour of its boxes.
REGIONS: dict[str, tuple[tuple[int, int, int, int], ...]] = {
    "skin": ((30, 70, 38, 78), (74, 70, 82, 78), (52, 38, 60, 46), (50, 102, 62, 108)),
    "hair": ((40, 14, 72, 26),),
    "eyes": ((36, 50, 42, 54), (70, 50, 76, 54)),
    "lips": ((46, 88, 66, 96),),
}
REGION_WEIGHT = {"skin": 1.0, "hair": 1.0, "eyes": 0.8, "lips": 0.6}
POOL = 2  # the recogniser averages 2x2 pixels first (56x56 grid)


def region_matrix() -> np.ndarray:
    """[3*56*56, 3*len(REGIONS)]: pooled crop (channel-major) -> mean colour of each region."""
    side = 112 // POOL
    matrix = np.zeros((3 * side * side, 3 * len(REGIONS)), dtype=np.float64)
    for index, boxes in enumerate(REGIONS.values()):
        cells = [
            (y, x)
            for x1, y1, x2, y2 in boxes
            for y in range(y1 // POOL, y2 // POOL)
            for x in range(x1 // POOL, x2 // POOL)
        ]
        for channel in range(3):
            for y, x in cells:
                matrix[channel * side * side + y * side + x, 3 * index + channel] = 1 / len(cells)
    return matrix


def region_features(crop_rgb: np.ndarray) -> np.ndarray:
    """The region colours of one aligned crop ([112, 112, 3] floats in the model's input scale)."""
    side = 112 // POOL
    pooled = crop_rgb.reshape(side, POOL, side, POOL, 3).mean(axis=(1, 3)).transpose(2, 0, 1)
    return pooled.reshape(-1) @ region_matrix()


def recogniser(*, stats: tuple[np.ndarray, np.ndarray], seed: int) -> onnx.ModelProto:
    """The ArcFace-shaped embedder; ``stats`` are the drawn faces' region-colour mean and std."""
    g = _Graph()
    image = "input.1"
    side = 112 // POOL
    mean, std = stats
    weight = np.repeat([REGION_WEIGHT[name] for name in REGIONS], 3)
    pooled = g.op("AveragePool", image, kernel_shape=[POOL, POOL], strides=[POOL, POOL])
    flat = g.op("Reshape", pooled, g.const([1, 3 * side * side], "shape"))
    colours = g.op("MatMul", flat, g.const(region_matrix()))
    # Standardised, weighted region colours, spread over 512 dimensions by a seeded random
    # projection (which keeps cosine similarities).
    scaled = g.op("Mul", g.op("Sub", colours, g.const(mean[None])), g.const((weight / std)[None]))
    rng = np.random.default_rng(seed)
    projection = rng.standard_normal((scaled_dim := 3 * len(REGIONS), EMBED_DIM))
    projection /= math.sqrt(scaled_dim)
    g.nodes.append(helper.make_node("MatMul", [scaled, g.const(projection)], ["embedding"]))
    inp = helper.make_tensor_value_info(image, TensorProto.FLOAT, [None, 3, 112, 112])
    out = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [None, EMBED_DIM])
    graph = helper.make_graph(g.nodes, "tiny_arcface", [inp], [out], g.inits)
    return _finish(graph)


def _finish(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # readable by every onnxruntime release of the last years
    onnx.checker.check_model(model)
    return model


def face_statistics(*, samples: int = 160, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and spread of the region colours over random drawn faces, aligned like ArcFaceONNX."""
    from insightface.utils import face_align  # the same alignment ArcFaceONNX uses

    from tests.comfy.standins import faces

    rng = random.Random(seed)
    rows = []
    for _ in range(samples):
        params = faces.random_params(rng)
        image, marks = faces.portrait(params, size=(224, 224), eye_distance=rng.uniform(38, 50))
        bgr = np.asarray(image.convert("RGB"))[:, :, ::-1]
        crop = face_align.norm_crop(bgr, landmark=np.asarray(marks.kps, dtype=np.float32))
        rows.append(region_features((crop[:, :, ::-1].astype(np.float64) - 127.5) / 127.5))
    table = np.asarray(rows)
    return table.mean(axis=0), np.maximum(table.std(axis=0), 0.05)
