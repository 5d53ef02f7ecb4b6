"""Fault injection (issue 13): nothing the user had is lost, nothing damaged is trusted, and every bad
input ends in one clear line. Each case of the issue is a test here; the SIGKILL sweep is in
``test_faults_sigkill.py``.

Kinds: existing outputs and concurrent runs, damaged or foreign checkpoints and artifacts, bad options
and inputs, training interrupted at the wrong moment.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

from yoloport.cli import main
from yoloport.errors import YoloportError

import yoloport

ROOT = Path(yoloport.__file__).resolve().parent.parent  # the yoloport under test, for subprocesses
NAMES = ["circle", "rectangle", "triangle"]


def tiny_cfg() -> dict:
    from yoloport.nn.model import DetectionModel

    return dict(DetectionModel("yolov5n").yaml, width_multiple=0.125, depth_multiple=0.33)


def tiny_model(nc: int = 3, seed: int = 0):
    from yoloport.nn.model import DetectionModel

    torch.manual_seed(seed)
    names = NAMES if nc == 3 else [f"c{i}" for i in range(nc)]
    return DetectionModel(tiny_cfg(), nc=nc, names=names).eval()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from yoloport.models import save_model

    return save_model(tiny_model(), tmp_path_factory.mktemp("ck") / "tiny.safetensors")


@pytest.fixture(scope="module")
def ckpt6(tmp_path_factory):
    from yoloport.models import save_model

    return save_model(tiny_model(6, seed=1), tmp_path_factory.mktemp("ck6") / "tiny6.safetensors")


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    from yoloport.data.synth import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("ds"), {"train": 6, "val": 4}, (96, 96), seed=1,
                                  workers=1, max_objects=3, min_object_size=10, classes=NAMES)


def one_line_error(capsys, rc: int, *words: str) -> str:
    """The command failed with exit 2 and one line on stderr that names ``words``; no traceback."""
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for w in words:
        assert w in err, (w, err)
    return err


def val_args(ckpt, ds, project, *extra):
    return ["val", "--weights", str(ckpt), "--data", str(ds), "--img-size", "96", "--batch-size", "4",
            "--project", str(project), *extra]


# ============================================================== existing outputs, concurrent runs
@pytest.mark.parametrize("command", ["detect", "val", "port", "train"])
def test_project_or_save_dir_that_is_a_file(command, ckpt, ds, tmp_path, capsys):
    afile = tmp_path / "notes.txt"
    afile.write_text("mine")
    img = ds.parent / "images" / "val" / "000000.jpg"
    args = {
        "detect": ["detect", "--weights", str(ckpt), "--source", str(img), "--save-dir", str(afile)],
        "val": val_args(ckpt, ds, afile),
        "port": ["port", "--weights", str(ckpt), "--data", str(ds), "--targets", "onnxruntime", "--project", str(afile)],
        "train": ["train", "--data", str(ds), "--cfg", "yolov5n", "--epochs", "1", "--project", str(afile)],
    }[command]
    one_line_error(capsys, main(args), str(afile))
    assert afile.read_text() == "mine"


def test_val_never_replaces_previous_results(ckpt, ds, tmp_path, capsys):
    assert main(val_args(ckpt, ds, tmp_path, "--name", "v")) == 0
    before = (tmp_path / "v" / "val.json").read_bytes()
    capsys.readouterr()
    one_line_error(capsys, main(val_args(ckpt, ds, tmp_path, "--name", "v", "--exist-ok")), "--overwrite")
    assert (tmp_path / "v" / "val.json").read_bytes() == before
    assert main(val_args(ckpt, ds, tmp_path, "--name", "v")) == 0  # without --exist-ok: a new folder
    assert (tmp_path / "v2" / "val.json").is_file()
    assert main(val_args(ckpt, ds, tmp_path, "--name", "v", "--exist-ok", "--overwrite")) == 0


def quantize_args(ckpt, calib, out, *extra):
    return ["quantize", "--weights", str(ckpt), "--backend", "onnxruntime", "--calib", str(calib), "--calib-n", "2",
            "--img-size", "96", "96", "--out", str(out), *extra]


def test_quantize_json_never_overwrites_a_user_file(ckpt, ds, tmp_path, capsys):
    user = tmp_path / "summary.json"
    user.write_text("my notes")
    calib = ds.parent / "images" / "train"
    one_line_error(capsys, main(quantize_args(ckpt, calib, tmp_path / "q", "--json", str(user))), str(user), "--overwrite")
    assert user.read_text() == "my notes"
    assert not (tmp_path / "q").exists(), "refused before any work"
    assert main(quantize_args(ckpt, calib, tmp_path / "q", "--json", str(user), "--overwrite")) == 0
    assert json.loads(user.read_text())["backend"] == "onnxruntime"


def _claim_and_hold(path, barrier, results):
    from yoloport.io.paths import claim_out_dir

    barrier.wait()
    try:
        claim_out_dir(path, overwrite=False, explicit=True)
        results.put("won")
    except YoloportError as e:
        results.put(f"refused: {e}")
    barrier.wait()  # winners hold their lock until every contender has tried


@pytest.mark.parametrize("exists", [False, True], ids=["new-folder", "empty-folder"])
def test_out_folder_claim_is_race_free(tmp_path, exists):
    out = tmp_path / "q"
    if exists:
        out.mkdir()
    ctx = multiprocessing.get_context("fork")
    n = 4
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_claim_and_hold, args=(out, barrier, results)) for _ in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    outcome = sorted(results.get(timeout=5) for _ in range(n))
    assert outcome.count("won") == 1, outcome


def test_two_concurrent_quantize_runs_into_one_folder(ckpt, ckpt6, ds, tmp_path):
    """Issue item 5: two models quantized into one --out at the same moment. Exactly one run builds;
    the other stops with one line; the folder holds one model's files only."""
    out = tmp_path / "q"
    calib = ds.parent / "images" / "train"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-m", "yoloport", *quantize_args(ck, calib, out)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for ck in (ckpt, ckpt6)]
    done = [(p.wait(300), p.stderr.read()) for p in procs]
    codes = sorted(rc for rc, _ in done)
    assert codes == [0, 2], done
    loser_err = next(err for rc, err in done if rc == 2).strip()
    assert "Traceback" not in loser_err and loser_err.splitlines()[-1].startswith("yoloport quantize: error:")
    from yoloport.backends.base import model_fingerprint, read_sidecar
    from yoloport.deploy.onnx_meta import read_onnx_meta
    from yoloport.models import load_model

    winner = load_model(ckpt if done[0][0] == 0 else ckpt6)
    info = read_sidecar(out / "model.onnxruntime.int8.onnx", expect_fingerprint=model_fingerprint(winner))
    assert info["head"]["nc"] == winner.nc
    assert len(read_onnx_meta(out / "model.fp32.onnx")["names"]) == winner.nc  # the fp32 ONNX is the winner's too


def test_export_and_convert_never_replace_an_existing_file(ckpt, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    base = ["export", "--weights", str(ckpt), "--img-size", "96", "--out", str(out)]
    assert main(base) == 0
    first = out.read_bytes()
    capsys.readouterr()
    one_line_error(capsys, main(base + ["--mode", "split"]), "--overwrite")  # even its own earlier export
    assert out.read_bytes() == first
    assert main(base + ["--mode", "split", "--overwrite"]) == 0
    conv = tmp_path / "c.safetensors"
    conv.write_bytes(b"precious")
    capsys.readouterr()
    one_line_error(capsys, main(["convert", "--weights", str(ckpt), "--out", str(conv)]), "--overwrite")
    assert conv.read_bytes() == b"precious"


def test_synth_overwrite_never_replaces_user_images(tmp_path, capsys):
    user = tmp_path / "photos"
    (user / "images" / "train").mkdir(parents=True)
    mine = user / "images" / "train" / "000000.jpg"
    mine.write_bytes(b"my holiday photo")
    rc = main(["data", "synth", "--out", str(user), "--n", "2", "--img-size", "64", "64", "--overwrite"])
    one_line_error(capsys, rc, "000000.jpg")
    assert mine.read_bytes() == b"my holiday photo"
    assert sorted(p.relative_to(user).as_posix() for p in user.rglob("*")) == ["images", "images/train",
                                                                               "images/train/000000.jpg"]


@pytest.mark.parametrize("command", ["profile", "bench"])
def test_profile_and_bench_json_never_overwrite(command, ckpt, tmp_path, capsys):
    user = tmp_path / "timings.json"
    user.write_text("keep")
    args = [command, "--backend", "onnxruntime", "--weights", str(ckpt), "--img-size", "96", "--json", str(user)]
    one_line_error(capsys, main(args), str(user), "--overwrite")
    assert user.read_text() == "keep"


def test_train_exist_ok_never_reuses_a_folder_holding_a_run(ds, tmp_path, capsys):
    run = tmp_path / "exp"
    run.mkdir()
    (run / "args.yaml").write_text("epochs: 3\n")
    rc = main(["train", "--data", str(ds), "--cfg", "yolov5n", "--project", str(tmp_path), "--name", "exp",
               "--exist-ok", "--epochs", "1", "--device", "cpu"])
    one_line_error(capsys, rc, "--resume")
    assert (run / "args.yaml").read_text() == "epochs: 3\n"


def test_port_exist_ok_keeps_a_previous_report(ckpt, ds, tmp_path, capsys):
    run = tmp_path / "exp"
    run.mkdir()
    (run / "report.json").write_text("{}")
    rc = main(["port", "--weights", str(ckpt), "--data", str(ds), "--targets", "onnxruntime", "--project",
               str(tmp_path), "--name", "exp", "--exist-ok"])
    one_line_error(capsys, rc, "report.json", "--overwrite")
    assert (run / "report.json").read_text() == "{}"


# ============================================================== damaged and foreign checkpoints
@pytest.mark.fixtures
def test_pt_with_flipped_bytes_is_refused(tmp_path, capsys):
    """Issue item 2: 64 flipped bytes inside a tensor of an Ultralytics .pt (its zip CRC fails)."""
    from conftest import fixture_path

    src = fixture_path("weights/yolov5n-v6.1.pt")
    with zipfile.ZipFile(src) as z:
        member = max(z.infolist(), key=lambda i: i.file_size)
        start = member.header_offset + 30 + len(member.filename.encode()) + len(member.extra) + 4096
    data = bytearray(src.read_bytes())
    data[start:start + 64] = bytes(b ^ 0xFF for b in data[start:start + 64])
    bad = tmp_path / "damaged.pt"
    bad.write_bytes(bytes(data))
    from yoloport.models import load_model

    with pytest.raises(YoloportError, match="CRC"):
        load_model(bad)
    rc = main(["detect", "--weights", str(bad), "--source", str(fixture_path("images/bus.jpg")),
               "--project", str(tmp_path / "runs")])
    one_line_error(capsys, rc, "CRC")


def _rewrite_safetensors(src: Path, dst: Path, edit_header=None, tail: bytes = b"") -> Path:
    import struct

    raw = src.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    if edit_header:
        edit_header(header)
    hb = json.dumps(header).encode()
    dst.write_bytes(struct.pack("<Q", len(hb)) + hb + raw[8 + n:] + tail)
    return dst


def _first_tensor(header):
    return next(k for k in header if k != "__metadata__")


@pytest.mark.parametrize("damage", ["padded", "overlap", "shape"])
def test_safetensors_whose_header_does_not_describe_its_bytes(damage, ckpt, tmp_path):
    def overlap(h):  # two tensors claim the same bytes
        names = sorted((k for k in h if k != "__metadata__"), key=lambda k: h[k]["data_offsets"][0])
        a, b = names[0], names[1]
        if h[a]["data_offsets"][1] - h[a]["data_offsets"][0] == h[b]["data_offsets"][1] - h[b]["data_offsets"][0]:
            h[b]["data_offsets"] = list(h[a]["data_offsets"])
        else:
            h[b]["data_offsets"] = [h[a]["data_offsets"][0], h[a]["data_offsets"][0] + h[b]["data_offsets"][1] - h[b]["data_offsets"][0]]

    def shape(h):
        t = _first_tensor(h)
        h[t]["shape"] = [1] + h[t]["shape"]  # same bytes count, but claims...
        h[t]["shape"][-1] += 1  # ... more bytes than its span

    edits = {"padded": (None, b"\0" * 64), "overlap": (overlap, b""), "shape": (shape, b"")}
    edit, tail = edits[damage]
    bad = _rewrite_safetensors(ckpt, tmp_path / "bad.safetensors", edit, tail)
    from yoloport.models import load_model

    with pytest.raises(YoloportError, match="corrupt|truncated"):
        load_model(bad)


def _with_meta(ckpt: Path, dst: Path, **changes) -> Path:
    from yoloport.io.checkpoint import save_checkpoint
    from safetensors.torch import load_file
    from safetensors import safe_open

    with safe_open(str(ckpt), framework="pt") as f:
        meta = json.loads(f.metadata()["yoloport"])
    meta.pop("format_version")
    meta.update(changes)
    return save_checkpoint(dst, load_file(str(ckpt)), meta)


@pytest.mark.parametrize("changes, words", [
    ({"yaml": 42}, "yaml"),
    ({"stride": "x"}, "stride"),
    ({"stride": [8.0, 16.0]}, "strides"),
    ({"names": ["a", "b"]}, "2 names for 3 classes"),
    ({"names": "circle"}, "names"),
    ({"anchors_px": [[1, 2, 3]]}, "anchors_px"),
    ({"img_size": [-1, 96]}, "img_size"),
    ({"nc": 80}, "nc"),
], ids=["yaml-42", "stride-x", "stride-levels", "3-names", "names-str", "anchors", "img-size", "nc"])
def test_checkpoint_metadata_is_validated(changes, words, ckpt, ds, tmp_path, capsys):
    """Issue items 6 and 7: metadata that would build a wrong model (or crash) is refused on load."""
    bad = _with_meta(ckpt, tmp_path / "bad.safetensors", **changes)
    img = ds.parent / "images" / "val" / "000000.jpg"
    rc = main(["detect", "--weights", str(bad), "--source", str(img), "--project", str(tmp_path / "runs")])
    one_line_error(capsys, rc, words)


# ============================================================== damaged and foreign artifacts
@pytest.fixture(scope="module")
def ort_artifacts(ckpt, ckpt6, ds, tmp_path_factory):
    calib = ds.parent / "images" / "train"
    root = tmp_path_factory.mktemp("art")
    for name, ck in (("a", ckpt), ("b", ckpt6)):
        assert main(quantize_args(ck, calib, root / name)) == 0
    return root


def _copy_artifact(root, dst):
    shutil.copytree(root / "a", dst)
    return dst / "model.onnxruntime.int8.onnx"


def test_another_models_onnx_under_a_sidecars_name_is_refused(ort_artifacts, ckpt, ds, tmp_path, capsys):
    """Issue item 4: model B's int8 ONNX (nc 6) put where model A's (nc 3) was."""
    art = _copy_artifact(ort_artifacts, tmp_path / "q")
    shutil.copyfile(ort_artifacts / "b" / "model.onnxruntime.int8.onnx", art)
    from yoloport.backends.registry import load_runner

    with pytest.raises(YoloportError, match="sha256|bytes"):
        load_runner("onnxruntime", artifact=art)
    img = ds.parent / "images" / "val" / "000000.jpg"
    rc = main(["detect", "--weights", str(ckpt), "--backend", "onnxruntime", "--artifact", str(art),
               "--source", str(img), "--project", str(tmp_path / "runs")])
    one_line_error(capsys, rc, "model.onnxruntime.int8.onnx")


def test_cut_artifact_is_refused(ort_artifacts, tmp_path):
    art = _copy_artifact(ort_artifacts, tmp_path / "q")
    art.write_bytes(art.read_bytes()[:100])
    from yoloport.backends.registry import load_runner

    with pytest.raises(YoloportError, match="100 bytes"):
        load_runner("onnxruntime", artifact=art)


def _fake_rknn(tmp_path, model):
    """An .rknn artifact laid out as the rknn backend writes it (the simulator rebuilds from
    ``model.rknn.build/source.onnx``); written through the real sidecar writer."""
    from yoloport.backends.base import write_sidecar
    from yoloport.backends.registry import sidecar_info
    from yoloport.deploy.export import export_onnx

    out = tmp_path / "r"
    build = out / "model.rknn.build"
    build.mkdir(parents=True)
    _, head = export_onnx(model, build / "source.onnx", (96, 96), "raw")
    art = out / "model.rknn"
    art.write_bytes(os.urandom(4096))
    write_sidecar(art, sidecar_info("rknn", model, head, (96, 96), 1, None, {"precision": "fp16"}, platform="rk3588",
                                    rknn={"build_dir": build.name, "source_onnx": f"{build.name}/source.onnx",
                                          "dataset": None}))
    return art


@pytest.mark.parametrize("damage", ["cut-rknn", "other-source-onnx"])
def test_rknn_simulator_runs_only_what_the_sidecar_vouches_for(damage, tmp_path):
    """Issue item 3: a .rknn cut to 100 bytes (or its source ONNX swapped) must not load."""
    model = tiny_model()
    art = _fake_rknn(tmp_path, model)
    if damage == "cut-rknn":
        art.write_bytes(art.read_bytes()[:100])
    else:
        from yoloport.deploy.export import export_onnx

        export_onnx(tiny_model(6, seed=1), art.parent / "model.rknn.build" / "source.onnx", (96, 96), "raw", overwrite=True)
    from yoloport.backends.registry import load_runner

    with pytest.raises(YoloportError, match="model.rknn|source.onnx"):
        load_runner("rknn", artifact=art, model=model)


# ============================================================== bad options and inputs
@pytest.mark.parametrize("extra, words", [
    (["--conf-thres", "2"], "--conf-thres"),
    (["--iou-thres", "-0.1"], "--iou-thres"),
    (["--img-size", "-64"], "--img-size"),
    (["--img-size", "0"], "--img-size"),
    (["--batch-size", "0"], "--batch-size"),
    (["--max-det", "0"], "--max-det"),
], ids=["conf-2", "iou-neg", "img-neg", "img-0", "batch-0", "maxdet-0"])
def test_val_bad_options(extra, words, ckpt, ds, tmp_path, capsys):
    one_line_error(capsys, main(val_args(ckpt, ds, tmp_path, *extra)), words)
    assert not list(tmp_path.iterdir()), "refused before any output"


def test_run_config_bad_value_is_one_line(ckpt, ds, tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("conf_thres: high\n")
    one_line_error(capsys, main(val_args(ckpt, ds, tmp_path / "runs", "--config", str(cfg))), "--conf-thres")


def test_data_yaml_nc_not_a_number(ckpt, ds, tmp_path, capsys):
    bad = tmp_path / "data.yaml"
    bad.write_text(f"path: {ds.parent}\ntrain: images/train\nval: images/val\nnc: abc\nnames: [circle, rectangle, triangle]\n")
    one_line_error(capsys, main(val_args(ckpt, bad, tmp_path / "runs")), "nc", "abc")


@pytest.fixture(scope="module")
def partial_run(ds, tmp_path_factory):
    """A training run stopped after its first of two epochs (resumable)."""
    from yoloport.engine.train import train

    return Path(train(train_settings(ds, tmp_path_factory.mktemp("partial"), stop_after=1))["save_dir"])


@pytest.mark.parametrize("edit", ["not-yaml", "list", "epochs-abc", "img-size"])
def test_train_resume_with_malformed_args_yaml(edit, partial_run, tmp_path, capsys):
    run = tmp_path / "exp"
    shutil.copytree(partial_run, run)
    args = yaml.safe_load((run / "args.yaml").read_text())
    text = {"not-yaml": "epochs: [unclosed\n", "list": "- a list\n",
            "epochs-abc": yaml.safe_dump({**args, "epochs": "abc"}),
            "img-size": yaml.safe_dump({**args, "img_size": [-5]})}[edit]
    (run / "args.yaml").write_text(text)
    one_line_error(capsys, main(["train", "--resume", str(run)]), "args.yaml")


def _copy_dataset(ds: Path, dst: Path) -> Path:
    shutil.copytree(ds.parent, dst)
    y = yaml.safe_load((dst / "data.yaml").read_text())
    y["path"] = str(dst)
    (dst / "data.yaml").write_text(yaml.safe_dump(y))
    return dst / "data.yaml"


def test_every_label_file_missing_is_said_on_the_console(ckpt, ds, tmp_path, capsys):
    data = _copy_dataset(ds, tmp_path / "d")
    shutil.rmtree(tmp_path / "d" / "labels")
    assert main(val_args(ckpt, data, tmp_path / "runs")) == 0
    err = capsys.readouterr().err
    assert "none of the 4 images has a label file" in err, err


def test_dropped_label_lines_are_listed_on_the_console(ckpt, ds, tmp_path, capsys):
    data = _copy_dataset(ds, tmp_path / "d")
    lbl = tmp_path / "d" / "labels" / "val" / "000001.txt"
    lbl.write_text(lbl.read_text() + "7 0.5 0.5 0.1 0.1\nnot a label\n")
    assert main(val_args(ckpt, data, tmp_path / "runs")) == 0
    err = capsys.readouterr().err
    assert "2 label line(s) dropped" in err and f"{lbl}:" in err, err


# ============================================================== training interrupted
def train_settings(ds, project, **kw):
    s = dict(data=str(ds), cfg=tiny_cfg(), epochs=2, batch_size=4, img_size=[96], device="cpu", workers=0, seed=3,
             project=str(project), name="exp", progress=False, noplots=True)
    s.update(kw)
    return s


class Killed(BaseException):
    """Stands for the process dying at this point (raised past every ``except Exception``)."""


def _equal_weights(a: Path, b: Path) -> None:
    from yoloport.io.checkpoint import read_checkpoint

    sa, _ = read_checkpoint(a)
    sb, _ = read_checkpoint(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.fixture(scope="module")
def unbroken(ds, tmp_path_factory):
    from yoloport.engine.train import train

    return train(train_settings(ds, tmp_path_factory.mktemp("full")))


@pytest.mark.parametrize("where", ["before-weights", "before-csv"])
def test_training_killed_around_the_epoch_save_resumes(where, ds, unbroken, tmp_path, monkeypatch):
    """Issue item 9: killed after an epoch is logged but before its weights are saved (now: the log
    comes after the weights), or after the weights but before the log. Both resume, and end with
    the weights of an unbroken run."""
    import yoloport.engine.train as T

    target = "_save_epoch" if where == "before-weights" else "write_csv"
    real = getattr(T, target)

    def die(*a, **k):
        raise Killed

    monkeypatch.setattr(T, target, die)
    with pytest.raises(Killed):
        T.train(train_settings(ds, tmp_path))
    monkeypatch.setattr(T, target, real)
    run = tmp_path / "exp"
    csv_rows = (run / "results.csv").read_text().splitlines() if (run / "results.csv").exists() else []
    assert len(csv_rows) <= 1, "no epoch is logged before its weights are durable"
    res = T.train({"resume": str(run), "progress": False})
    assert res["epochs_completed"] == 2
    _equal_weights(Path(unbroken["last"]), run / "weights" / "last.safetensors")
    full_csv = Path(unbroken["save_dir"], "results.csv").read_text().splitlines()
    assert [r.split(",")[:9] for r in (run / "results.csv").read_text().splitlines()] == [r.split(",")[:9] for r in full_csv]


def test_temp_files_of_a_killed_save_are_removed_on_resume(ds, unbroken, tmp_path):
    from yoloport.engine.train import train

    res = train(train_settings(ds, tmp_path, stop_after=1))
    run = Path(res["save_dir"])
    stale = [run / "weights" / ".train_state.tmp-0123456789ab.pt", run / "weights" / ".best.tmp-0123456789ab.safetensors",
             run / ".results.tmp-0123456789ab.csv"]
    for p in stale:
        p.write_bytes(b"half a file")
    train({"resume": str(run), "progress": False})
    assert not [p for p in stale if p.exists()]
    _equal_weights(Path(unbroken["last"]), run / "weights" / "last.safetensors")


def test_training_killed_after_its_last_save_finishes_on_resume(ds, unbroken, tmp_path, monkeypatch, capsys):
    """Killed after the final epoch's weights and state were durable but before its log and results:
    --resume writes what the run did not (results.csv, results.json) and exits 0; a finished run is
    then refused as finished."""
    import yoloport.engine.train as T
    from yoloport.cli import main

    real = T.write_csv
    calls = []

    def die_on_last(*a, **k):
        calls.append(1)
        if len(calls) == 2:  # the second epoch of two: its weights and state are already saved
            raise Killed
        return real(*a, **k)

    monkeypatch.setattr(T, "write_csv", die_on_last)
    with pytest.raises(Killed):
        T.train(train_settings(ds, tmp_path))
    monkeypatch.setattr(T, "write_csv", real)
    run = tmp_path / "exp"
    assert not (run / "results.json").exists()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    res = json.loads((run / "results.json").read_text())
    assert res["epochs_completed"] == 2 and res["metrics"]["mAP50_95"] == unbroken["metrics"]["mAP50_95"]
    _equal_weights(Path(unbroken["last"]), run / "weights" / "last.safetensors")
    assert len((run / "results.csv").read_text().splitlines()) == 3  # header + both epochs
    capsys.readouterr()
    rc = main(["train", "--resume", str(run), "--no-progress"])
    one_line_error(capsys, rc, "already finished")
