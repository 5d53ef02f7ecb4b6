"""``yoloport.analysis.bench`` and ``yoloport bench``: structure of the results, never timings."""
import json

import numpy as np
import pytest

from yoloport.analysis import bench as B
from yoloport.analysis.tables import format_table
from yoloport.cli import main

HW = (128, 160)


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """``--threads`` / TorchRunner(threads=) set torch's global thread count: restore it."""
    import torch

    prev = torch.get_num_threads()
    yield
    torch.set_num_threads(prev)


def _check(r, batch, mode="model"):
    assert r["mode"] == mode and r["batch"] == batch and r["img_hw"] == list(HW)
    lat = r["latency_ms"]
    assert set(lat) == {"median", "p90", "mean", "min"}
    assert 0 < lat["min"] <= lat["median"] <= lat["p90"]
    assert r["throughput_ips"] > 0 and r["timed_calls"] == r["repeat"]
    json.dumps(r)


@pytest.fixture(scope="module")
def torch_runner(tiny_model):
    import torch

    from yoloport.backends.torch_backend import TorchRunner

    prev = torch.get_num_threads()
    yield TorchRunner(tiny_model, threads=1)  # TorchRunner sets torch's global thread count
    torch.set_num_threads(prev)


@pytest.mark.parametrize("batch", [1, 2])
def test_bench_runner_torch(torch_runner, batch):
    r = B.bench_runner(torch_runner, batch, HW, warmup=1, repeat=3)
    _check(r, batch)
    assert r["graph_batch"] is None and r["calls_per_batch"] == 1


def test_bench_end_to_end(torch_runner):
    r = B.bench_end_to_end(torch_runner, 2, HW, B.synthetic_bgr(3, (90, 120)), warmup=1, repeat=2, conf_thres=0.001)
    _check(r, 2, "end_to_end")
    assert set(r["stages_ms"]) == {"read", "pre", "inference", "post"} and r["detections_per_image"] >= 0
    assert r["source_kind"] == "decoded" and r["stages_ms"]["read"] < r["stages_ms"]["inference"]


@pytest.mark.parametrize("kind", ["files", "encoded"])
def test_bench_end_to_end_reads_every_call(torch_runner, tmp_path, kind, monkeypatch):
    """The read stage decodes the image at every call (files from disk, or in-memory JPEGs), and the
    detections come from the same post-processing as detect."""
    import cv2

    frames = B.synthetic_bgr(3, (90, 120))
    if kind == "files":
        for i, im in enumerate(frames):
            cv2.imwrite(str(tmp_path / f"{i}.png"), im)
        (tmp_path / "notes.txt").write_text("not an image")
        images = B.image_files(tmp_path)
        assert [p.name for p in images] == ["0.png", "1.png", "2.png"]
    else:
        images = B.synthetic_jpegs(3, (90, 120))
        assert all(a.ndim == 1 and a.dtype == np.uint8 for a in images)
    reads = []
    real_read = B._read
    monkeypatch.setattr(B, "_read", lambda item: reads.append(1) or real_read(item))
    r = B.bench_end_to_end(torch_runner, 1, HW, images, warmup=1, repeat=4, conf_thres=0.001)
    _check(r, 1, "end_to_end")
    assert r["source_kind"] == kind and len(reads) == 5 and r["stages_ms"]["read"] > 0
    lines = B.end_to_end_lines([B.bench_runner(torch_runner, 1, HW, warmup=0, repeat=1), r])
    assert len(lines) == 1 and "x the model alone" in lines[0] and "read" in lines[0]


def test_model_and_end_to_end_interleaved(torch_runner):
    """One model-only call and one end-to-end call per round; both results carry the round-robin's load."""
    calls = []
    real = torch_runner.__call__

    class Spy:
        head, stride, backend = torch_runner.head, torch_runner.stride, "torch"

        def __call__(self, x):
            calls.append(x.shape[0])
            return real(x)

    model, e2e = B.bench_model_and_end_to_end(Spy(), 2, HW, B.synthetic_jpegs(3, (90, 120)), warmup=1, repeat=3,
                                              conf_thres=0.001)
    _check(model, 2)
    _check(e2e, 2, "end_to_end")
    assert len(calls) == 2 * (1 + 3)  # every round: one model call and one end-to-end call
    assert model["order"] == e2e["order"] == "round-robin" and "before" in e2e["load"]
    assert set(e2e["stages_ms"]) == {"read", "pre", "inference", "post"} and e2e["source_kind"] == "encoded"
    assert "timed round-robin" in B.end_to_end_lines([model, e2e])[0]


def test_bench_end_to_end_bad_images(torch_runner, tmp_path):
    from yoloport.errors import YoloportError

    with pytest.raises(YoloportError, match="at least one image"):
        B.bench_end_to_end(torch_runner, 1, HW, [])
    with pytest.raises(YoloportError, match="decoded"):
        B.bench_end_to_end(torch_runner, 1, HW, [np.zeros(10, np.uint8)], warmup=0, repeat=1)
    (tmp_path / "a.jpg").write_text("not a jpeg")
    with pytest.raises(YoloportError, match="no readable image"):
        B.image_files(tmp_path)


def test_time_interleaved_round_robin_and_load():
    """Every round calls every configuration once, the first one rotating; min <= median; load recorded."""
    calls_seen = []
    calls = {name: (lambda n=name: calls_seen.append(n)) for name in ("a", "b", "c")}
    t = B.time_interleaved(calls, warmup=1, repeat=4, threads=2)
    assert calls_seen[:3] == ["a", "b", "c"]  # warm-up round
    timed = calls_seen[3:]
    assert [timed[i * 3] for i in range(4)] == ["a", "b", "c", "a"]  # rotating first
    assert all(sorted(timed[i * 3 : i * 3 + 3]) == ["a", "b", "c"] for i in range(4))
    assert t["order"] == "round-robin" and t["threads"] == 2 and t["repeat"] == 4
    for r in t["results"].values():
        assert len(r["times_ms"]) == 4 and r["min_ms"] <= r["median_ms"] <= r["p90_ms"]
    assert {"load1", "cpus", "busy"} <= set(t["load_before"]) and t["load_after"]["cpus"] >= 1
    json.dumps(t)


def test_interleaved_speedups_on_min_and_median():
    timing = {"load_before": {"busy": False}, "other_cpu_share": 0.5, "results": {
        "slow": {"min_ms": 100.0, "median_ms": 150.0}, "fast": {"min_ms": 25.0, "median_ms": 50.0}}}
    s = B.interleaved_speedups(timing, "slow")
    assert s["speedups"]["fast"] == {"by_min": 4.0, "by_median": 3.0} and s["speedups"]["slow"]["by_min"] == 1.0
    assert s["busy"] is True  # other processes used half the CPUs
    timing["other_cpu_share"] = 0.05
    assert B.interleaved_speedups(timing, "slow")["busy"] is False
    from yoloport.errors import YoloportError

    with pytest.raises(YoloportError):
        B.interleaved_speedups(timing, "missing")
    with pytest.raises(YoloportError):
        B.time_interleaved({})


def test_onnxruntime_graph_per_batch_and_fixed_batch_split(tmp_path, tiny_model):
    r2 = B.runner_for_batch("onnxruntime", tiny_model, HW, 2, tmp_path, threads=1)
    res = B.bench_runner(r2, 2, HW, warmup=1, repeat=2)
    _check(res, 2)
    assert res["graph_batch"] == 2 and res["calls_per_batch"] == 1
    r1 = B.runner_for_batch("onnxruntime", tiny_model, HW, 1, tmp_path, threads=1)
    split = B.bench_runner(r1, 2, HW, warmup=0, repeat=1)
    assert split["graph_batch"] == 1 and split["calls_per_batch"] == 2
    text = B.format_results([res, split])
    assert "x2 calls" in text and "images/s" in text


def test_latency_stats_and_bad_counts(torch_runner):
    s = B.latency_stats([0.01, 0.02, 0.03, 0.04], batch=4)
    assert s["latency_ms"]["median"] == pytest.approx(25.0) and s["throughput_ips"] == pytest.approx(160.0)
    from yoloport.errors import YoloportError

    with pytest.raises(YoloportError):
        B.bench_runner(torch_runner, 0, HW)
    with pytest.raises(YoloportError):
        B.bench_runner(torch_runner, 1, HW, images=np.zeros((1, 3, 64, 64), np.float32))


def test_format_table_styles():
    t = format_table(["a", "b"], [["x", "1"]], footer=[["total", "1"]])
    assert t.splitlines()[0].startswith("a") and "total" in t.splitlines()[-1]
    md = format_table(["a", "b"], [["x", "1"]], style="markdown")
    assert md.splitlines()[1] == "|:--|--:|"


# ----------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory, tiny_model):
    from yoloport.models import save_model

    return save_model(tiny_model, tmp_path_factory.mktemp("ck") / "tiny.safetensors")


@pytest.mark.parametrize("backend", ["torch", "onnxruntime", "openvino", pytest.param("mlu-sim", marks=pytest.mark.slow)])
def test_cli_bench_json(tmp_path, tiny_ckpt, backend, capsys):
    out = tmp_path / "b.json"
    rc = main(["bench", "--backend", backend, "--weights", str(tiny_ckpt), "--batch", "1", "2", "--img-size", "160", "128",
               "--warmup", "1", "--repeat", "2", "--threads", "1", "--end-to-end", "--json", str(out)])
    assert rc == 0
    doc = json.loads(out.read_text())
    from yoloport.backends.registry import canonical_name

    assert doc["backend"] == canonical_name(backend) and doc["machine"]["cpu_count"]
    assert [(r["batch"], r["mode"]) for r in doc["results"]] == [(1, "model"), (1, "end_to_end"), (2, "model"), (2, "end_to_end")]
    for r in doc["results"]:
        _check(r, r["batch"], r["mode"])
        if r["mode"] == "end_to_end":
            assert set(r["stages_ms"]) == {"read", "pre", "inference", "post"} and r["source_kind"] == "encoded"
    assert {"before", "after"} == set(doc["load"])
    out = capsys.readouterr().out
    assert "images/s" in out and "infer ms" in out and out.count("x the model alone") == 2


@pytest.mark.parametrize("argv, msg", [
    (["--backend", "nosuch"], "unknown backend"),
    (["--backend", "onnxruntime", "--artifact", "missing.onnx"], "does not exist"),
    (["--backend", "torch", "--batch", "0"], "--batch"),
])
def test_cli_bench_bad_input_one_line(argv, msg, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc = main(["bench", *argv])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and len(err.splitlines()) == 1 and msg in err
    assert not (tmp_path / "runs").exists()


def test_torch_runner_threads_do_not_leak():
    """TorchRunner(threads=1) runs with one thread and leaves torch's process-wide setting as it was."""
    import numpy as np
    import torch

    from yoloport.backends.torch_backend import TorchRunner
    from yoloport.models import load_model

    before = torch.get_num_threads()
    seen = []
    model = load_model("default").float()
    runner = TorchRunner(model, threads=1)
    hook = model.model[0].register_forward_pre_hook(lambda *_: seen.append(torch.get_num_threads()))
    try:
        runner(np.zeros((1, 3, 64, 64), np.float32))
    finally:
        hook.remove()
    assert seen == [1] and torch.get_num_threads() == before
