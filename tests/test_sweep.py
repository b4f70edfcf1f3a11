"""Sweeps: a grid's cartesian product x seeds, its results table, and bad input that ends in one sentence."""

from __future__ import annotations

import csv
import json
import socket
import sys

import pytest

from tinyviz.cli import main
from tinyviz.experiments import executors, sweep
from tinyviz.experiments.executors import LocalExecutor, task_resources, write_returned_run
from tinyviz.experiments.sweep import grid_sweep, load_sweep, run_sweep

# Tiny runs: a 16-wide model on a 6k-character corpus, a few steps, validation every 3 steps.
TINY = ["d_model=16", "n_heads=2", "n_ctx=16", "batch_size=4", "corpus_chars=6000", "eval_interval=3",
        "eval_batches=1", "warmup_steps=1"]


def test_grid_is_the_cartesian_product_and_cells_differ_only_in_their_fields():
    sw = grid_sweep("micro", ["lr=1e-3,3e-3", "n_layers=1,2,3"], seeds=2, steps=10, sets=TINY)
    assert sw.n_runs == 12 and len(sw.cells) == 6 and sw.fields == ["lr", "n_layers"]
    assert sw.cells[0].values == {"lr": 1e-3, "n_layers": 1} and sw.cells[-1].values == {"lr": 3e-3, "n_layers": 3}
    ref = sw.make_config(sw.cells[0], 0)
    assert ref.train.snapshot_interval == 0 and ref.train.checkpoint_interval == 0 and ref.train.steps == 10
    for cell in sw.cells:
        diff = set(sw.make_config(cell, 1).diff(ref))
        assert diff <= {"train.lr", "model.n_layers", "train.seed"}, (cell, diff)
    assert sw.make_config(sw.cells[3], 1).diff(sw.make_config(sw.cells[3], 0)) == {"train.seed": (1, 0)}
    assert len({c.folder for c in sw.cells}) == 6


@pytest.mark.parametrize("grid, says", [
    (["lr=fast"], "lr='fast' is not a valid float"),
    (["n_layers=2.5"], "not a valid int"),
    (["lr="], "empty value"),
    (["lr=1e-3,"], "empty value"),
    ([], "at least one --grid"),
    (["colour=red,blue"], "unknown field 'colour' in --grid"),
    (["lr"], "must look like FIELD=v1,v2"),
    (["lr=1e-3", "lr=3e-3"], "given twice"),
    (["seed=1,2"], "--seeds"),
    (["n_heads=3"], "d_model=64 must be divisible by n_heads=3"),
    (["d_model=60,64", "n_heads=4,8"], "the grid cell d_model=60 n_heads=8 is not a valid config"),
])
def test_bad_grid_exits_2_with_a_sentence_and_writes_nothing(grid, says, tmp_path, capsys):
    out = tmp_path / "sweep"
    args = ["sweep", "--out", str(out), "--steps", "5", *[a for g in grid for a in ("--grid", g)]]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err and err.startswith("error: ")
    assert not out.exists()


def test_more_than_a_thousand_runs_needs_yes(tmp_path, capsys):
    out = tmp_path / "big"
    grid = ["--grid", "lr=" + ",".join(f"{i}e-4" for i in range(1, 21)), "--grid", "batch_size=" +
            ",".join(str(i) for i in range(1, 11)), "--seeds", "6"]
    assert main(["sweep", "--out", str(out), *grid]) == 2
    assert "1,200 runs, more than 1,000; pass --yes" in capsys.readouterr().err and not out.exists()
    assert grid_sweep("micro", [grid[1], grid[3]], 6, yes=True).n_runs == 1200


def test_ray_not_installed_says_how_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    out = tmp_path / "sweep"
    assert main(["sweep", "--grid", "lr=1e-3", "--out", str(out), "--executor", "ray"]) == 2
    err = capsys.readouterr().err
    assert "needs Ray, which is not installed" in err and "pip install -e '.[ray]'" in err and not out.exists()


@pytest.mark.timeout(30)  # a hang guard: ray.init alone would retry an unreachable address for a minute
def test_unreachable_ray_address_is_one_sentence_not_a_hang(tmp_path, capsys):
    pytest.importorskip("ray")
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "sweep"
    assert main(["sweep", "--grid", "lr=1e-3", "--out", str(out), "--executor", "ray",
                 "--ray-address", f"127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err
    assert f"no Ray cluster answers at 127.0.0.1:{port}" in err and "ray start --head" in err and not out.exists()


def test_ray_address_needs_the_ray_executor(tmp_path, capsys):
    assert main(["sweep", "--grid", "lr=1e-3", "--out", str(tmp_path / "s"), "--ray-address", "auto"]) == 2
    assert "--ray-address needs --executor ray" in capsys.readouterr().err


def test_a_run_asks_ray_for_one_cpu_and_its_gpus_only_on_cuda():
    sw = grid_sweep("micro", ["lr=1e-3"], 1)
    cpu = sw.make_config(sw.cells[0], 0).to_dict()
    cuda = {**cpu, "train": {**cpu["train"], "device": "cuda"}}
    assert task_resources(cpu) == {"num_cpus": 1.0, "num_gpus": 0.0}
    assert task_resources(cuda) == {"num_cpus": 1.0, "num_gpus": 1.0}
    assert task_resources(cuda, 0.25) == {"num_cpus": 1.0, "num_gpus": 0.25}  # four small runs share a GPU
    with pytest.raises(ValueError, match="above 0"):
        task_resources(cuda, 0)


def test_device_cuda_grid_value_is_accepted_as_a_cell_field():
    sw = grid_sweep("micro", ["device=cpu,cuda"], 1)
    assert [c.values["device"] for c in sw.cells] == ["cpu", "cuda"]
    assert [task_resources(sw.make_config(c, 0).to_dict(), 0.5)["num_gpus"] for c in sw.cells] == [0.0, 0.5]


def test_a_returned_run_is_written_whole_and_cannot_escape_its_folder(tmp_path):
    target = tmp_path / "cell-seed0"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    write_returned_run(target, {"config.json": b"{}", "snapshots/a.bin": b"x"})
    assert sorted(p.name for p in target.rglob("*")) == ["a.bin", "config.json", "snapshots"]
    with pytest.raises(ValueError, match="outside its folder"):
        write_returned_run(tmp_path / "evil-seed0", {"../../escaped": b"x"})
    assert not (tmp_path.parent / "escaped").exists() and not (tmp_path / "evil-seed0").exists()


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    sw = grid_sweep("micro", ["lr=1e-3,3e-3"], seeds=2, steps=6, sets=TINY)
    return run_sweep(sw, out, LocalExecutor(1), images=False, sample_tokens=4)


def test_sweep_writes_a_run_per_cell_and_seed_and_a_row_per_run(tiny_sweep):
    out = tiny_sweep.out
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [(r["lr"], r["seed"]) for r in rows] == [("0.001", "0"), ("0.001", "1"), ("0.003", "0"), ("0.003", "1")]
    assert {r["status"] for r in rows} == {"done"} and all(r["node"] and float(r["wall_s"]) > 0 for r in rows)
    for r in rows:
        ms = [json.loads(line) for line in (out / r["run"] / "metrics.jsonl").read_text().splitlines()]
        assert float(r["final_loss"]) == pytest.approx(sum(m["loss"] for m in ms) / len(ms))
        assert float(r["val_loss"]) == [m["val_loss"] for m in ms if m.get("val_loss") is not None][-1]
    desc, json_rows = load_sweep(out)
    assert desc["fields"] == ["lr"] and desc["seeds"] == [0, 1] and len(json_rows) == 4
    curves = list(csv.DictReader((out / "curves.csv").open()))
    assert {r["arm"] for r in curves} == {"lr=1e-3", "lr=3e-3"} and len(curves) == 4 * 6
    summary = (out / "summary.md").read_text()
    assert "`lr=1e-3`" in summary and "(lowest val)" in summary and (out / "loss.html").exists()
    assert not list(out.glob(".sweep-*"))  # the shared-folder marker is gone


def test_sweep_numbers_repeat_bit_for_bit(tiny_sweep, tmp_path):
    sw = grid_sweep("micro", ["lr=1e-3,3e-3"], seeds=2, steps=6, sets=TINY)
    again = run_sweep(sw, tmp_path, LocalExecutor(1), images=False, report=True, sample_tokens=4)
    assert (again.out / "curves.csv").read_bytes() == (tiny_sweep.out / "curves.csv").read_bytes()


def test_not_a_sweep_folder_is_a_sentence(tmp_path):
    with pytest.raises(ValueError, match="not a finished sweep folder"):
        load_sweep(tmp_path)


def test_make_executor_reads_the_environment_address(monkeypatch):
    seen = {}

    class FakeRay:
        def __init__(self, address, gpus_per_run):
            seen["address"] = address

    monkeypatch.setattr(executors, "RayExecutor", FakeRay)
    monkeypatch.setenv("TINYVIZ_RAY_ADDRESS", "10.0.0.5:6379")
    executors.make_executor("ray")
    assert seen["address"] == "10.0.0.5:6379"
    executors.make_executor("ray", address="auto")
    assert seen["address"] == "auto"
    assert sweep.MAX_RUNS == 1000


def test_cuda_runs_without_a_gpu_fail_before_anything_is_written(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "sweep"
    assert main(["sweep", "--grid", "lr=1e-3", "--set", "device=cuda", "--out", str(out)]) == 2
    assert "device='cuda' was asked for but no CUDA GPU is available" in capsys.readouterr().err
    assert not out.exists()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine: the same jobs pass the check
    sw = grid_sweep("micro", ["lr=1e-3"], 1, sets=["device=cuda"])
    LocalExecutor(1).check(sw.jobs(out, 4))


class _FakeRay:
    def __init__(self, gpus_per_node):
        self._nodes = [{"Alive": True, "Resources": {"CPU": 1.0, **({"GPU": g} if g else {})}} for g in gpus_per_node]

    def nodes(self):
        return self._nodes


@pytest.mark.parametrize("gpus_per_node, per_run, says", [
    ([0, 0], 1.0, "the Ray cluster has none"),
    ([1, 0], 2.0, "no Ray node has more than 1"),
    ([1, 2], 2.0, None),
    ([1], 0.25, None),
])
def test_ray_gpu_runs_are_checked_against_the_cluster(gpus_per_node, per_run, says, tmp_path):
    ex = object.__new__(executors.RayExecutor)  # no cluster: the check only reads ray.nodes()
    ex.ray, ex.gpus_per_run = _FakeRay(gpus_per_node), per_run
    jobs = grid_sweep("micro", ["lr=1e-3"], 1, sets=["device=cuda"]).jobs(tmp_path, 4)
    if says is None:
        ex.check(jobs)
    else:
        with pytest.raises(ValueError, match=says):
            ex.check(jobs)
    ex.check(grid_sweep("micro", ["lr=1e-3"], 1).jobs(tmp_path, 4))  # cpu runs never need a GPU
