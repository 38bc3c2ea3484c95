"""studies.bench runs end to end on a tiny setting and writes every figure (no timing
claims: figures on shared CI machines mean little)."""

import json
import math
import multiprocessing
import pickle

import pytest

from studies import bench


def test_bench_writes_every_row(tmp_path, capsys):
    out = tmp_path / "bench.json"
    result = bench.main(
        [
            "--depth", "8", "--iters", "3", "--warmup", "1", "--repeats", "2",
            "--batch-size", "16", "--pack", "2", "--images", "96", "--test-images", "16",
            "--pil-images", "32", "--threads", "1", "--json", str(out),
        ]
    )  # fmt: skip
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(result))
    for key in bench.ROWS:
        assert written[key] > 0 and math.isfinite(written[key]), key
        assert len(written["rates"][key]) == 2, key
    assert written["device"] == "cpu" and written["depth"] == 8 and written["pack"] == 2
    assert written["iters"] == 3 and written["batch_size"] == 16 and written["threads"] == 1
    assert written["torch_version"]
    table = capsys.readouterr().out
    assert all(row in table for row in bench.ROWS)
    # The reference's persistent DataLoader workers are gone once its row is measured.
    assert not [p for p in multiprocessing.active_children() if "Worker" in p.name]


def test_cifar_files_load_through_torchvision(tmp_path):
    folder = bench.write_cifar_batches(tmp_path, 40, 10)
    with open(folder / "data_batch_1", "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    assert entry["data"].shape == (40, 3072) and entry["data"].dtype.name == "uint8"
    ds = bench._bench_cifar_class()(str(tmp_path), train=True)
    assert ds.data.shape == (40, 32, 32, 3) and len(ds.targets) == 40
    assert ds.classes == list(bench.CLASSES)
    # Rows are R, G, B planes of 32x32, as in the real files.
    assert (ds.data[0, :, :, 1].reshape(-1) == entry["data"][0, 1024:2048]).all()


def test_bad_arguments_are_refused():
    with pytest.raises(SystemExit):
        bench.parse_args(["--rows", "fp64"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--device", "tpu"])


def test_paper_run_times_a_run_alone_and_packed(tmp_path, capsys, monkeypatch):
    from resnet_repro.data import load_dataset

    # The mechanics only: a 512-image subset instead of the full 50,000 + 10,000.
    monkeypatch.setattr(bench, "load_dataset", lambda name: load_dataset(name, subset=512))
    out = tmp_path / "bench.json"
    result = bench.main(
        [
            "--depth", "8", "--rows", "augment", "--repeats", "1", "--images", "256",
            "--paper-run", "2", "--pack", "2", "--threads", "1", "--json", str(out),
        ]
    )  # fmt: skip
    run = json.loads(out.read_text())["paper_run"]
    assert run == json.loads(json.dumps(result["paper_run"]))
    assert run["iterations"] == 2 and run["packed_seeds"] == 2
    assert run["minutes_per_run"] == pytest.approx(run["seconds"] * 64000 / 2 / 60)
    # 64000 / 2 iterations, 2 runs in each packed one
    assert run["packed_minutes_per_run"] == pytest.approx(run["packed_seconds"] * 16000 / 60)
    assert run["packing_speedup"] == pytest.approx(run["seconds"] * 2 / run["packed_seconds"])
    assert "min per 64k-iteration run" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        bench.parse_args(["--paper-run", "-1"])
