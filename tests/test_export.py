"""ONNX export (yoloport.deploy.export / heads / nms_op / onnx_meta) and ``yoloport export``.

Acceptance (issue 4): for every head mode, at 640x640 and 736x416 (W H), the exported graph run by
onnxruntime gives the same detections as the PyTorch model through ``TorchRunner`` + ``postprocess``
(boxes within 1e-2 px, conf within 1e-4, same classes and count). The fast subset uses the v6.1
nano fixture; the full matrix (both fixture weights) is marked slow. Each graph is exported once per
module and shared.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")

from yoloport.cli import main  # noqa: E402
from yoloport.data.letterbox import preprocess  # noqa: E402
from yoloport.deploy.export import build_onnx, export_model, export_onnx  # noqa: E402
from yoloport.nn.heads import EXPORT_MODES, decode_raw_torch  # noqa: E402
from yoloport.deploy.onnx_meta import head_spec_from_onnx, read_onnx_meta, sidecar_path  # noqa: E402
from yoloport.errors import YoloportError  # noqa: E402
from yoloport.fixtures import fixtures_dir  # noqa: E402
from yoloport.ops.postprocess import HeadSpec, postprocess  # noqa: E402

FX = fixtures_dir()
WEIGHTS = {"v6.1n": "yolov5n-v6.1.pt", "v5.0s": "yolov5s-v5.0.pt"}
SIZES = {"640x640": (640, 640), "736x416": (416, 736)}  # name W x H -> (h, w)
IMAGES = ("bus", "zidane")
BOX_TOL, CONF_TOL = 1e-2, 1e-4

_fixtures_present = pytest.mark.skipif(
    FX is None or not all((FX / "weights" / w).is_file() for w in WEIGHTS.values()),
    reason="shared fixtures (weights/yolov5*.pt, images/*.jpg) not found; set YOLOPORT_FIXTURES",
)


def needs_fixtures(test):
    """Marked ``fixtures`` and skipped, saying so, when the fixture weights are absent."""
    return pytest.mark.fixtures(_fixtures_present(test))


# ----------------------------------------------------------------------------- helpers


def assert_same_detections(got: np.ndarray, ref: np.ndarray, what: str = "") -> None:
    """Same count and classes; boxes within BOX_TOL px, conf within CONF_TOL (rows matched by class, conf)."""
    assert len(got) == len(ref), f"{what}: {len(got)} detections vs {len(ref)} reference"
    if not len(ref):
        return
    og = np.lexsort((-got[:, 4], got[:, 5]))
    orf = np.lexsort((-ref[:, 4], ref[:, 5]))
    g, r = got[og], ref[orf]
    np.testing.assert_array_equal(g[:, 5], r[:, 5], err_msg=f"{what}: classes differ")
    assert np.abs(g[:, :4] - r[:, :4]).max() <= BOX_TOL, f"{what}: box diff {np.abs(g[:, :4] - r[:, :4]).max()}"
    assert np.abs(g[:, 4] - r[:, 4]).max() <= CONF_TOL, f"{what}: conf diff {np.abs(g[:, 4] - r[:, 4]).max()}"


class Case:
    """One fixture weight: the model, letterboxed inputs per size and the PyTorch reference detections."""

    def __init__(self, key: str, tmp):
        from yoloport.backends.torch_backend import TorchRunner
        from yoloport.models import load_model

        self.key = key
        self.model = load_model(FX / "weights" / WEIGHTS[key])
        self.tmp = tmp
        self.inputs = {}
        self.ref = {}
        runner = TorchRunner(self.model)
        for sname, hw in SIZES.items():
            x = np.stack([preprocess(cv2.imread(str(FX / "images" / f"{im}.jpg")), hw, auto=False)[0] for im in IMAGES])
            self.inputs[sname] = x
            self.ref[sname] = postprocess(runner(x), runner.head)
        self._exports = {}

    def export(self, mode: str, sname: str):
        """(path, HeadSpec) of this weight's ``mode`` graph at size ``sname``, batch 2 (cached)."""
        k = (mode, sname)
        if k not in self._exports:
            path = self.tmp / f"{self.key}-{mode}-{sname}.onnx"
            self._exports[k] = export_onnx(self.model, path, SIZES[sname], mode, batch=len(IMAGES))
        return self._exports[k]


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    if FX is None:
        pytest.skip("shared fixtures not found; set YOLOPORT_FIXTURES")
    made = {}

    def get(key: str) -> Case:
        if key not in made:
            made[key] = Case(key, tmp_path_factory.mktemp(key))
        return made[key]

    return get


def run_onnx(path, x: np.ndarray) -> list[np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})


def check_case(case: Case, mode: str, sname: str) -> None:
    path, head = case.export(mode, sname)
    outs = run_onnx(path, case.inputs[sname])
    dets = postprocess(outs, head)
    for i, name in enumerate(IMAGES):
        assert_same_detections(dets[i], case.ref[sname][i], f"{case.key} {mode} {sname} {name}")


# ----------------------------------------------------------------------------- acceptance matrix


@needs_fixtures
@pytest.mark.parametrize("sname", list(SIZES))
@pytest.mark.parametrize("mode", EXPORT_MODES)
def test_modes_match_torch_fast(cases, mode, sname):
    check_case(cases("v6.1n"), mode, sname)


@needs_fixtures
@pytest.mark.slow
@pytest.mark.parametrize("sname", list(SIZES))
@pytest.mark.parametrize("mode", EXPORT_MODES)
def test_modes_match_torch_v5s(cases, mode, sname):
    check_case(cases("v5.0s"), mode, sname)


@needs_fixtures
def test_reference_has_detections(cases):
    """Guard: the comparisons above are not vacuous."""
    case = cases("v6.1n")
    assert all(len(d) >= 3 for s in SIZES for d in case.ref[s])


# ----------------------------------------------------------------------------- graph shape rules


@needs_fixtures
@pytest.mark.parametrize("mode", ["split", "decoded", "end2end"])
def test_decode_graph_rules(cases, mode):
    """No ScatterND, no Pow, no tensor above rank 4 in the decoding heads."""
    path, _ = cases("v6.1n").export(mode, "736x416")
    m = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    ops = {n.op_type for n in m.graph.node}
    assert not ops & {"ScatterND", "Pow"}, ops
    ranks = [len(v.type.tensor_type.shape.dim) for v in list(m.graph.value_info) + list(m.graph.output)]
    assert max(ranks) <= 4
    if mode == "end2end":
        assert "NonMaxSuppression" in ops


@needs_fixtures
def test_split_outputs_and_layout(cases):
    case = cases("v6.1n")
    path, head = case.export("split", "736x416")
    outs = run_onnx(path, case.inputs["736x416"])
    n = 3 * (52 * 92 + 26 * 46 + 13 * 23)
    assert [o.shape for o in outs] == [(2, n, 2), (2, n, 2), (2, n, 81)]
    # row for row equal to the host decode of the raw outputs
    raw_path, raw_head = case.export("raw", "736x416")
    from yoloport.ops.postprocess import decode_outputs

    host = decode_outputs(run_onnx(raw_path, case.inputs["736x416"]), raw_head)
    graph = decode_outputs(outs, head)
    assert np.abs(host[..., :4] - graph[..., :4]).max() < 1e-2
    assert np.abs(host[..., 4:] - graph[..., 4:]).max() < 1e-5


@needs_fixtures
def test_end2end_layout(cases):
    """count [B,1] then [B, max_det, 7] rows (batch, class, score, x1, y1, x2, y2), zero padded."""
    case = cases("v6.1n")
    path, head = case.export("end2end", "640x640")
    num, rows = run_onnx(path, case.inputs["640x640"])
    assert num.shape == (2, 1) and rows.shape == (2, 300, 7)
    for b in range(2):
        k = int(num[b, 0])
        assert k == len(case.ref["640x640"][b])
        assert (rows[b, :k, 0] == b).all()
        assert (np.diff(rows[b, :k, 2]) <= 0).all(), "rows best first"
        assert not rows[b, k:].any(), "padding rows are zeros"
    meta = read_onnx_meta(path)
    assert (meta["conf_thres"], meta["iou_thres"], meta["max_det"]) == (0.25, 0.45, 300)


@needs_fixtures
def test_end2end_thresholds_and_max_det(cases, tmp_path):
    """Baked-in conf 0.1 / IoU 0.5 / max_det 5 equal the host NMS with the same settings."""
    case = cases("v6.1n")
    x = case.inputs["640x640"]
    path, head = export_onnx(case.model, tmp_path / "e.onnx", (640, 640), "end2end", batch=2, conf_thres=0.1,
                             iou_thres=0.5, max_det=5)
    from yoloport.backends.torch_backend import TorchRunner

    r = TorchRunner(case.model)
    ref = postprocess(r(x), r.head, conf_thres=0.1, iou_thres=0.5, max_det=5)
    got = postprocess(run_onnx(path, x), head, conf_thres=0.1)
    for g, rf in zip(got, ref):
        assert len(rf) == 5
        assert_same_detections(g, rf, "end2end max_det 5")


@needs_fixtures
def test_end2end_eager_matches_graph(cases):
    """The eager end2end head (torch NMS) and the ONNX NonMaxSuppression graph agree."""
    from yoloport.deploy.export import prepare_model

    case = cases("v6.1n")
    path, _ = case.export("end2end", "640x640")
    m, _ = prepare_model(case.model, "end2end", (640, 640))
    with torch.no_grad():
        num, rows = m(torch.from_numpy(case.inputs["640x640"]))
    gnum, grows = run_onnx(path, case.inputs["640x640"])
    np.testing.assert_array_equal(num.numpy(), gnum)
    assert np.abs(rows.numpy() - grows).max() < 1e-2


@needs_fixtures
def test_dynamic_batch(cases, tmp_path):
    case = cases("v6.1n")
    path, head = export_onnx(case.model, tmp_path / "d.onnx", (640, 640), "split", dynamic=True)
    x = case.inputs["640x640"]
    for xb in (x[:1], x):
        dets = postprocess(run_onnx(path, xb), head)
        for i, d in enumerate(dets):
            assert_same_detections(d, case.ref["640x640"][i], "dynamic")
    assert read_onnx_meta(path)["batch"] == "dynamic"


# ----------------------------------------------------------------------------- metadata


@needs_fixtures
@pytest.mark.parametrize("mode", EXPORT_MODES)
def test_metadata_and_sidecar(cases, mode):
    case = cases("v6.1n")
    path, head = case.export(mode, "736x416")
    meta = read_onnx_meta(path)
    for key in ("names", "stride", "anchors", "input_hw", "mode", "preprocess", "sigmoid", "nc", "yoloport_version",
                "head_spec", "opset", "outputs"):
        assert key in meta, key
    assert meta["input_hw"] == [416, 736] and meta["mode"] == mode and meta["nc"] == 80
    assert meta["names"][0] == "person" and meta["stride"] == [8.0, 16.0, 32.0]
    assert meta["anchors"][0][0] == [10.0, 13.0]
    assert meta["preprocess"]["letterbox_color"] == [114, 114, 114] and meta["preprocess"]["color"] == "RGB"
    spec = head_spec_from_onnx(path)
    assert spec == head == HeadSpec.from_model(case.model, mode, convention=meta["convention"])
    assert meta["convention"] == {"raw": "yoloport", "split": "split", "decoded": "ultralytics", "end2end": None}[mode]
    side = json.loads(sidecar_path(path).read_text())
    assert side["head_spec"] == spec.to_dict()
    assert {k: side[k] for k in meta} == meta
    names = [o.name for o in onnx.load(str(path)).graph.output]
    assert names == meta["outputs"]


def test_read_meta_errors(tmp_path):
    with pytest.raises(YoloportError, match="no such"):
        read_onnx_meta(tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all \xff\xfe")
    with pytest.raises(YoloportError):
        read_onnx_meta(bad)


# ----------------------------------------------------------------------------- small model (no fixtures)


@pytest.fixture(scope="module")
def tiny():
    """The embedded default model (yolov5n, 6 shape classes): fast exports without fixtures, with
    outputs that depend on the image (a random model's do not, so a graph that drops its input
    would pass)."""
    from conftest import signal_model

    return signal_model()


def shape_images(n: int, hw) -> np.ndarray:
    """``n`` synthetic-shape images, letterboxed: float32 ``[n, 3, h, w]`` RGB 0..1."""
    from yoloport.data.synth import RenderOptions, render_image

    rng = np.random.default_rng(5)
    opts = RenderOptions(max_objects=6, background_prob=0.0, min_object_size=12.0)
    return np.stack([preprocess(render_image(tuple(hw), rng, opts).image, tuple(hw), auto=False)[0] for _ in range(n)])


@pytest.mark.parametrize("mode", EXPORT_MODES)
def test_tiny_modes_match_host_decode(tiny, mode):
    """Graph decode equals the host decode of the eager raw outputs on a shape image."""
    from yoloport.ops.decode import decode_raw

    proto, head, meta, _ = build_onnx(tiny, (128, 96), mode, batch=1, conf_thres=0.0, max_det=20)
    x = shape_images(1, (128, 96))
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = sess.run(None, {"images": x})
    with torch.no_grad():
        _, raw = tiny(torch.from_numpy(x))
    raw = [r.permute(0, 1, 4, 2, 3).reshape(1, -1, r.shape[2], r.shape[3]).numpy() for r in raw]
    host = decode_raw(raw, np.asarray(head.anchors_px), head.strides)
    if mode == "end2end":
        from yoloport.ops.nms import non_max_suppression

        ref = non_max_suppression(host, 0.0, 0.45, max_det=20)[0]
        got = postprocess(outs, head, conf_thres=0.0)[0]
        assert len(got) == len(ref) == 20
        np.testing.assert_allclose(np.sort(got[:, 4]), np.sort(ref[:, 4]), rtol=1e-4)
        return
    from yoloport.ops.postprocess import decode_outputs

    got = decode_outputs(outs, head)
    np.testing.assert_allclose(got, host, atol=1e-3, rtol=1e-5)


def test_torch_decode_matches_numpy(tiny):
    from yoloport.ops.decode import decode_raw

    x = torch.from_numpy(shape_images(2, (64, 96)))
    with torch.no_grad():
        _, raw = tiny(x)
    raw = [r.permute(0, 1, 4, 2, 3).reshape(2, -1, r.shape[2], r.shape[3]) for r in raw]
    head = HeadSpec.from_model(tiny)
    a = decode_raw([r.numpy() for r in raw], np.asarray(head.anchors_px), head.strides)
    b = decode_raw_torch(raw, head.anchors_px, head.strides).numpy()
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-6)


def test_torch_nms_matches_numpy():
    from yoloport.nn.nms_op import torch_non_max_suppression
    from yoloport.ops.nms import non_max_suppression

    rng = np.random.default_rng(1)
    pred = np.zeros((2, 500, 8), np.float32)
    pred[..., :2] = rng.uniform(0, 200, (2, 500, 2))
    pred[..., 2:4] = rng.uniform(5, 60, (2, 500, 2))
    pred[..., 4:] = rng.random((2, 500, 4))
    for multi_label in (False, True):
        a = non_max_suppression(pred, 0.1, 0.45, multi_label=multi_label)
        b = torch_non_max_suppression(torch.from_numpy(pred), 0.1, 0.45, multi_label=multi_label)
        for x, y in zip(a, b):
            assert len(x) > 10
            np.testing.assert_allclose(x, y.numpy(), atol=1e-5)


def test_export_arg_errors(tiny, tmp_path):
    out = tmp_path / "m.onnx"
    with pytest.raises(YoloportError, match="mode"):
        export_onnx(tiny, out, (64, 64), "fancy")
    with pytest.raises(YoloportError, match="opset"):
        export_onnx(tiny, out, (64, 64), "raw", opset=9)
    with pytest.raises(YoloportError, match="raw only"):
        export_onnx(tiny, out, (64, 64), "split", sigmoid=True)
    with pytest.raises(YoloportError, match="stride"):
        export_onnx(tiny, out, (60, 64), "raw")
    with pytest.raises(YoloportError, match="dynamic"):
        export_onnx(tiny, out, (64, 64), "end2end", dynamic=True)
    with pytest.raises(YoloportError, match=".onnx"):
        export_onnx(tiny, tmp_path / "m.txt", (64, 64), "raw")
    assert not out.exists()


def test_never_replaces_a_user_file(tiny, tmp_path):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"precious")
    with pytest.raises(YoloportError, match="--overwrite"):
        export_onnx(tiny, out, (64, 64), "raw")
    assert out.read_bytes() == b"precious"
    # an explicit overwrite replaces it; a previous yoloport export is replaced without asking
    export_onnx(tiny, out, (64, 64), "raw", overwrite=True)
    assert read_onnx_meta(out)["mode"] == "raw"
    export_onnx(tiny, out, (64, 64), "split")
    assert read_onnx_meta(out)["mode"] == "split"
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name], "no temporary files left behind"


def test_lint_refusal_writes_nothing(tiny, tmp_path):
    pytest.importorskip("yoloport.deploy.lint")
    out = tmp_path / "e.onnx"
    with pytest.raises(YoloportError, match="lint"):
        export_model(tiny, out, (64, 64), "end2end", target="rknn")
    assert not out.exists() and not sidecar_path(out).exists()
    res = export_model(tiny, out, (64, 64), "end2end", target="rknn", force=True)
    assert out.exists() and not res.lint.ok


@pytest.mark.parametrize("mode", ["raw", "split"])
def test_raw_and_split_pass_rknn_lint(tiny, mode):
    lint = pytest.importorskip("yoloport.deploy.lint")
    proto, *_ = build_onnx(tiny, (64, 96), mode)
    report = lint.lint_model(proto, "rknn")
    assert report.errors == [], [f.rule_id for f in report.errors]


@needs_fixtures
@pytest.mark.parametrize("mode", ["raw", "split"])
def test_fixture_raw_and_split_pass_rknn_lint(cases, mode):
    lint = pytest.importorskip("yoloport.deploy.lint")
    path, _ = cases("v6.1n").export(mode, "736x416")
    assert lint.lint_model(path, "rknn").errors == []


def test_simplify_and_opsets(tiny):
    pytest.importorskip("onnxslim")
    x = shape_images(1, (64, 64))
    results = []
    for opset, simplify in ((11, False), (12, True), (19, True)):
        proto, *_ = build_onnx(tiny, (64, 64), "split", opset=opset, simplify=simplify)
        assert read_meta_from_proto(proto)["opset"] == opset
        sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        results.append(sess.run(None, {"images": x}))
    for r in results[1:]:
        for a, b in zip(results[0], r):
            np.testing.assert_allclose(a, b, atol=1e-3)


def read_meta_from_proto(proto):
    from yoloport.deploy.onnx_meta import meta_from_proto

    return meta_from_proto(proto)


# ----------------------------------------------------------------------------- CLI


def test_cli_missing_weights(tmp_path, capsys):
    rc = main(["export", "--weights", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "missing.pt" in err


def test_cli_bad_opset(tmp_path, capsys):
    rc = main(["export", "--weights", "yolov5n", "--opset", "99", "--out", str(tmp_path / "m.onnx")])
    assert rc == 2 and "opset" in capsys.readouterr().err


def test_cli_export_bundled_config(tmp_path, capsys):
    out = tmp_path / "n.onnx"
    rc = main(["export", "--weights", "yolov5n", "--img-size", "96", "64", "--mode", "split", "--target", "rknn",
               "--out", str(out), "--check"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "rknn: 0 errors" in text and "check" in text
    side = json.loads(sidecar_path(out).read_text())
    assert side["input_hw"] == [64, 96] and side["mode"] == "split" and side["lint"]["ok"]
    assert side["output_shapes"]["conf"] == [1, 3 * (8 * 12 + 4 * 6 + 2 * 3), 81]


@needs_fixtures
def test_cli_model_key_uses_registry_export(tmp_path, capsys):
    out = tmp_path / "k.onnx"
    rc = main(["export", "--model-key", "yolov5n-v6.1", "--img-size", "320", "--mode", "end2end", "--max-det", "50",
               "--conf-thres", "0.3", "--out", str(out)])
    assert rc == 0
    meta = read_onnx_meta(out)
    assert meta["max_det"] == 50 and meta["conf_thres"] == 0.3 and meta["opset"] == 12
