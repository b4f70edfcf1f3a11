import json
import threading

import numpy as np
import torch

from tinyviz.config import apply_overrides
from tinyviz.training.runs import Run, list_runs
from tinyviz.training.session import TrainingSession


def test_a_run_folder_holds_what_the_format_promises(tiny_cfg, tmp_path):
    session = TrainingSession.start(tiny_cfg, tmp_path / "r")
    assert session.train() == "done"
    files = {p.name for p in (tmp_path / "r").iterdir()}
    assert {"config.json", "tokenizer.json", "model.safetensors", "train_state.safetensors",
            "state.json", "metrics.jsonl", "snapshots"} <= files
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["tinyviz_version"] and config["torch_version"] and config["format_version"] == 1
    assert config["train"]["seed"] == 0 and config["model"]["d_vocab"] == session.tokenizer.vocab_size
    run = Run.open(tmp_path / "r")
    metrics = run.metrics()
    assert [m["step"] for m in metrics] == list(range(1, 41))
    assert [m["step"] for m in metrics if m["val_loss"] is not None] == [20, 40]
    assert run.snapshot_steps() == [0, 20, 40]
    snap = run.load_snapshot(20)
    L, H, T = 2, 2, len(snap["tokens"])
    assert snap["patterns"].shape == (L, H, T, T)
    np.testing.assert_allclose(snap["patterns"].sum(-1), 1.0, atol=2e-3)  # stored as float16
    assert run.state()["status"] == "done" and run.weights_step() == 40
    assert list_runs(tmp_path)[0].name == "r"


def test_save_then_load_gives_identical_logits(tiny_cfg, tmp_path):
    session = TrainingSession.start(tiny_cfg, tmp_path / "r")
    session.train(max_steps=10)
    x = torch.tensor([session.probe_ids])
    session.trainer.model.eval()
    before = session.trainer.model(x)
    after = Run.open(tmp_path / "r").load_model()(x)
    assert torch.equal(before, after)


def test_resume_continues_exactly_where_it_stopped(tiny_cfg, tmp_path):
    cfg = apply_overrides(tiny_cfg, ["dropout=0.1"])
    straight = TrainingSession.start(cfg, tmp_path / "a")
    straight.train()
    first = TrainingSession.start(cfg, tmp_path / "b")
    first.train(max_steps=15)  # stops mid-way, between checkpoints
    assert first.status == "stopped"
    resumed = TrainingSession.resume(tmp_path / "b")
    assert resumed.step == 15
    assert resumed.train() == "done"
    a, b = Run.open(tmp_path / "a").metrics(), Run.open(tmp_path / "b").metrics()
    assert [m["loss"] for m in a] == [m["loss"] for m in b]
    assert [m["val_loss"] for m in a] == [m["val_loss"] for m in b]
    wa, wb = Run.open(tmp_path / "a").load_model(), Run.open(tmp_path / "b").load_model()
    for (n, p), (_, q) in zip(wa.named_parameters(), wb.named_parameters()):
        assert torch.equal(p, q), n


def test_stop_request_saves_and_reports(tiny_cfg, tmp_path):
    session = TrainingSession.start(tiny_cfg, tmp_path / "r")
    stop = threading.Event()
    seen = []

    def on_step(m):
        seen.append(m.step)
        if m.step == 7:
            stop.set()

    assert session.train(stop=stop, on_step=on_step) == "stopped"
    assert seen[-1] == 7 and "resume" in session.message
    run = Run.open(tmp_path / "r")
    assert run.weights_step() == 7 and run.state()["status"] == "stopped"


def test_nan_keeps_the_last_good_weights_and_says_why(tiny_cfg, tmp_path):
    # The NaN is forced at step 5: a diverging learning rate may or may not blow up on a given seed and CPU.
    session = TrainingSession.start(tiny_cfg, tmp_path / "r")
    real = session.trainer.loss_on
    good = {}

    def loss_on(x, y):
        if session.trainer.step_count == 4:
            good.update({n: p.detach().clone() for n, p in session.trainer.model.named_parameters()})
            return real(x, y) * float("nan")
        return real(x, y)

    session.trainer.loss_on = loss_on
    assert session.train() == "failed"
    assert "loss became nan at step 5" in session.message and "Lower the learning rate" in session.message
    run = Run.open(tmp_path / "r")
    assert run.state()["status"] == "failed" and run.weights_step() == 4 == session.step
    saved = dict(run.load_model().named_parameters())
    for name, p in good.items():
        assert torch.equal(saved[name], p), name  # the weights of step 4, untouched by the bad step
    assert [m["step"] for m in run.metrics()] == [1, 2, 3, 4]


def test_on_snapshot_fires_for_each_snapshot(tiny_cfg, tmp_path):
    session = TrainingSession.start(tiny_cfg, tmp_path / "r")
    steps = []
    session.train(on_snapshot=steps.append)
    assert steps == [20, 40]
    metrics = Run.open(tmp_path / "r").metrics()
    assert [m["step"] for m in metrics if m["entropy_mean"] is not None] == [20, 40]


def test_snapshots_store_head_scores_as_arrays_and_read_the_older_json_form(tiny_cfg, tmp_path):
    from safetensors.torch import save_file

    from tinyviz.analysis import probes

    session = TrainingSession.start(tiny_cfg, tmp_path / "r")
    fresh = probes.probe_snapshot(session.trainer.model, torch.tensor(session.probe_ids))
    snap = session.run.load_snapshot(0)
    assert list(snap["scores"]) == list(probes.SCORE_NAMES) and snap["entropy"].shape == (2, 2)
    for name in probes.SCORE_NAMES:
        np.testing.assert_array_equal(snap["scores"][name], fresh["scores"][name])
    np.testing.assert_array_equal(snap["entropy"], fresh["entropy"])
    # written before: scores and entropy as nested lists inside the JSON metadata
    info = {"act_stats": fresh["act_stats"], "entropy_mean": fresh["entropy_mean"],
            "entropy": fresh["entropy"].tolist(), "scores": {k: v.tolist() for k, v in fresh["scores"].items()}}
    tensors = {"patterns": torch.as_tensor(fresh["patterns"]), "tokens": torch.tensor(session.probe_ids)}
    save_file(tensors, str(tmp_path / "r" / "snapshots" / "step_0000007.safetensors"),
              metadata={"step": "7", "info": json.dumps(info)})
    old = session.run.load_snapshot(7)
    for name in probes.SCORE_NAMES:
        np.testing.assert_array_equal(old["scores"][name], fresh["scores"][name])
    np.testing.assert_array_equal(old["entropy"], fresh["entropy"])
    assert old["act_stats"] == fresh["act_stats"] and old["entropy_mean"] == fresh["entropy_mean"]


def test_metrics_are_appended_through_the_run_and_old_records_read_at_one_depth(tmp_path, tiny_cfg):
    """entropy_mean sits at the top level of a record; runs written before kept it under "extra"."""
    run = TrainingSession.start(tiny_cfg, tmp_path / "r").run
    with run.metrics_log() as append:
        append({"step": 1, "loss": 3.0, "extra": {"entropy_mean": 1.25, "sample": "abc"}})
        append({"step": 2, "loss": 2.9, "entropy_mean": 1.5, "extra": {}})
    with open(tmp_path / "r" / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "loss"')  # a line torn by a crash mid-append
    assert run.metrics() == [{"step": 1, "loss": 3.0, "entropy_mean": 1.25, "extra": {"sample": "abc"}},
                             {"step": 2, "loss": 2.9, "entropy_mean": 1.5, "extra": {}}]
