"""``yoloport port``: target parsing, the staged run on a tiny model, the report, and the exit status."""
import json

import pytest

import _checks as C

from yoloport.analysis import port as port_mod
from yoloport.analysis.port import parse_targets
from yoloport.cli import main
from yoloport.errors import YoloportError


def test_parse_targets():
    ts = parse_targets("onnxruntime,openvino:fp32,rknn:rk3568,mlu-sim")
    assert [t.name for t in ts] == ["onnxruntime-int8", "openvino-fp32", "rknn-rk3568-int8", "mlu-sim-int8"]
    assert parse_targets("rknn")[0].options == {"platform": "rk3588", "head_fp32": "convs"}
    assert parse_targets("rknn", full_int8=True)[0].options == {"platform": "rk3588"}
    assert parse_targets("ort")[0].backend == "onnxruntime"
    for bad, needle in [("tensorrt", "unknown backend"), ("torch", "reference"), ("onnxruntime:int4", "neither"),
                        ("ort,onnxruntime", "twice"), (" , ", "no targets")]:
        with pytest.raises(YoloportError, match=needle):
            parse_targets(bad)


@pytest.fixture(scope="module")
def shapes_ckpt(tmp_path_factory):
    """The embedded default model (trained on the synthetic shapes port generates) at 128x160: its
    validation and comparison numbers mean something, a random model's do not."""
    from conftest import signal_model
    from yoloport.data.synth import SHAPE_CLASSES
    from yoloport.models import save_model

    m = signal_model()
    assert list(m.names) == list(SHAPE_CLASSES)
    m.img_size = (128, 160)
    return save_model(m, tmp_path_factory.mktemp("w") / "shapes.safetensors")


def test_port_runs_and_writes_reports(tmp_path, shapes_ckpt, capsys):
    rc = main(["port", "--weights", str(shapes_ckpt), "--targets", "onnxruntime", "--val-n", "4", "--calib-n", "2", "--max-drop", "100",
               "--bench-batches", "1", "--repeat", "2", "--warmup", "1", "--project", str(tmp_path), "--name", "p"])
    out = capsys.readouterr().out
    assert rc == 0, out
    run = tmp_path / "p"
    rep = json.loads((run / "report.json").read_text())
    assert rep["img_hw"] == [128, 160]
    t = rep["targets"][0]
    assert t["name"] == "onnxruntime-int8" and not t.get("error")
    assert {"mAP50", "mAP50_95"} <= set(t["val"]) and t["size_mb"] > 0
    assert t["profile"]["rows"] and t["bench"][0]["batch"] == 1
    assert t["compare"]["outputs"] and t["lint"]["errors"] == 0
    # batch 1 of the reference and every benchmarkable target timed round-robin in one run (issue 14 item 4)
    speed = rep["speed"]
    assert speed["order"] == "round-robin" and speed["reference"] == "torch-fp32"
    assert set(speed["speedups"]) == {"torch-fp32", "onnxruntime-int8"} and speed["speedups"]["torch-fp32"] == 1.0
    assert t["bench"][0]["speedup_1thread_cpu"] == speed["speedups"]["onnxruntime-int8"] > 0
    assert t["bench"][0]["speedup_by_min"] == speed["speedups_wall"]["onnxruntime-int8"] > 0
    assert "round-robin" in (run / "report.md").read_text()
    html = (run / "report.html").read_text()
    assert "<table>" in html and "data:image/png;base64" in html
    assert "onnxruntime-int8" in (run / "report.md").read_text()
    # the deploy folder (issue 15 item 3): artifact + sidecar + calibration list + README, checked in test_deploy_folder.py
    deploy = run / "onnxruntime-int8" / "deploy"
    assert t["deploy"] == str(deploy) and (deploy / "README.md").is_file() and (deploy / "calibration.sha256").is_file()
    assert "[ 1/" in out  # the progress display names the stages
    # the numbers mean something: the model finds the shapes; int8 (calibrated on the train split,
    # judged on the val split) stays close. Measured: fp32 mAP50 0.737, int8 0.735; SQNR 31-33 dB.
    assert all("/images/train/" in p for p in rep["calibration"]["paths"])
    assert rep["reference"]["val"]["mAP50"] > 0.5
    C.check_compare_report(t["compare"], C.INT8_MIN_SQNR_DB, C.INT8_MIN_COSINE)
    assert abs(t["val"]["mAP50_95"] - rep["reference"]["val"]["mAP50_95"]) < 0.05


def test_port_fails_naming_the_target_over_max_drop(tmp_path, shapes_ckpt, monkeypatch, capsys):
    real = port_mod.validate_runner

    def fake(runner, data, img_hw, batch_size=8, names=None, **kw):  # port also asks for image_stats (issue 11)
        res = real(runner, data, img_hw, batch_size, names, **kw)
        res["mAP50_95"] = 0.50 if runner.backend == "torch" else 0.45  # a 5-point drop
        return res

    monkeypatch.setattr(port_mod, "validate_runner", fake)
    rc = main(["port", "--weights", str(shapes_ckpt), "--targets", "onnxruntime:fp32", "--val-n", "2", "--calib-n", "2",
               "--no-bench", "--no-profile", "--max-drop", "1.0", "--project", str(tmp_path), "--name", "q"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "FAILED onnxruntime-fp32: mAP@0.5:0.95 drop 5.00 points > --max-drop 1.0" in out


def test_port_does_not_pass_a_gate_against_a_reference_that_finds_nothing(tmp_path, capsys):
    """An untrained model (the shapes' names, random weights) on the shapes data: fp32 scores ~0, so a
    drop of ~0 proves nothing and the gate fails, unjudged, with one line saying why."""
    from conftest import random_model
    from yoloport.data.synth import SHAPE_CLASSES
    from yoloport.models import save_model

    m = random_model(nc=len(SHAPE_CLASSES), names=list(SHAPE_CLASSES))
    m.img_size = (128, 160)
    ckpt = save_model(m, tmp_path / "untrained.safetensors")
    rc = main(["port", "--weights", str(ckpt), "--targets", "onnxruntime:fp32", "--val-n", "2", "--calib-n", "2",
               "--no-bench", "--no-profile", "--project", str(tmp_path), "--name", "u"])
    out = capsys.readouterr().out
    rep = json.loads((tmp_path / "u" / "report.json").read_text())
    assert rep["reference"]["val"]["mAP50_95"] * 100 <= 1.0, "the untrained model found the shapes"
    assert rc == 1
    assert "warning: the fp32 reference scores mAP@0.5:0.95" in out
    assert "FAILED onnxruntime-fp32: --max-drop gate not judged: the fp32 reference scores" in out
    assert rep["targets"][0]["gate"]["passed"] is False
    assert "(not judged)" in (tmp_path / "u" / "report.md").read_text()


def test_port_bad_input(tmp_path, shapes_ckpt, capsys):
    assert main(["port", "--weights", str(shapes_ckpt), "--targets", "tensorrt", "--project", str(tmp_path)]) == 2
    assert "unknown backend" in capsys.readouterr().err
    from conftest import random_model
    from yoloport.models import save_model

    coco_like = save_model(random_model(nc=2, names=["a", "b"]), tmp_path / "ab.safetensors")
    assert main(["port", "--weights", str(coco_like), "--targets", "onnxruntime", "--project", str(tmp_path)]) == 2
    assert "no --data given" in capsys.readouterr().err


def test_fp32_reference_is_reused_only_while_model_and_data_are_unchanged(tmp_path, shapes_ckpt, monkeypatch, capsys):
    """The port's torch reference metrics come from the cache when model and data are the same (a
    regenerated identical data set too), and are measured again when a label changes or --no-cache."""
    real = port_mod.validate_runner
    torch_calls = []

    def counting(runner, *a, **k):
        if runner.backend == "torch":
            torch_calls.append(1)
        return real(runner, *a, **k)

    monkeypatch.setattr(port_mod, "validate_runner", counting)
    monkeypatch.setenv("YOLOPORT_CACHE", str(tmp_path / "cache"))
    base = ["port", "--weights", str(shapes_ckpt), "--targets", "onnxruntime", "--val-n", "4", "--calib-n", "2", "--max-drop", "100",
            "--no-bench", "--no-profile", "--project", str(tmp_path)]

    def run(name, *extra):
        assert main([*base, "--name", name, *extra]) == 0, capsys.readouterr().out
        return json.loads((tmp_path / name / "report.json").read_text())["reference"]

    first = run("a")
    assert "val_from_cache" not in first and len(torch_calls) == 1
    second = run("b")  # a new run folder with its own, identical, generated validation set
    assert second["val_from_cache"] and len(torch_calls) == 1
    assert second["val"]["mAP50_95"] == first["val"]["mAP50_95"]
    run("c", "--no-cache")
    assert len(torch_calls) == 2

    # the same data with one label changed: another key, measured again
    data = tmp_path / "b" / "data"
    yaml_file = next(data.glob("*.yaml"))
    label = sorted((data / "labels" / "val").glob("*.txt"))[0]
    label.write_text(label.read_text() + "0 0.5 0.5 0.1 0.1\n")
    run("d", "--data", str(yaml_file))
    assert len(torch_calls) == 3
    (tmp_path / "cache").joinpath("junk").write_text("x")
    for f in (tmp_path / "cache").glob("reference-*.json"):
        f.write_text("{not json")  # a damaged entry is not trusted
    run("e", "--data", str(yaml_file))
    assert len(torch_calls) == 4
