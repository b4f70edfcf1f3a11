"""The ablation lab: arms differ only in the switch under test, seeds repeat, the summary is the runs' numbers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tinyviz.cli import main
from tinyviz.experiments import ablate, ablations
from tinyviz.experiments.ablate import arm_stats, run_ablation
from tinyviz.experiments.ablations import ABLATIONS, arm_config, base_config, get
from tinyviz.training.runs import Run

# Tiny runs: a 16-wide model on a 6k-character corpus, a few steps, validation every 2 steps.
TINY = ["d_model=16", "n_heads=2", "n_ctx=16", "batch_size=4", "corpus_chars=6000", "eval_interval=2",
        "eval_batches=1", "warmup_steps=1"]

# What each arm may change relative to the preset's first arm: the switch under test, and
# nothing else (the residual, norm and mlp presets are the documented exceptions).
INTENDED = {
    "init": {"pytorch_default": {"model.init"}},
    "posemb": {a: {"model.pos_emb"} for a in ("sinusoidal", "rope", "none")},
    "tying": {"untied": {"model.tie_embeddings"}},
    "residual": {"nores-1L": {"model.residual", "model.n_layers"}, "nores-2L": {"model.residual", "model.n_layers"},
                 "nores-3L": {"model.residual"}},
    "norm": {"pre-LN-nowarmup": {"train.warmup_steps"}, "post-LN": {"model.norm_position"},
             "post-LN-nowarmup": {"model.norm_position", "train.warmup_steps"},
             "pre-RMSNorm": {"model.norm"}, "pre-nonorm": {"model.norm"}},
    "mlp": {"relu": {"model.mlp"}, "swiglu": {"model.mlp", "model.d_ff"}},
    "causal": {"noncausal": {"model.causal"}},
    "scale": {"L4": {"model.n_layers"}, "L6": {"model.n_layers"}, "d128": {"model.d_model"},
              "d256": {"model.d_model"}, "h1": {"model.n_heads"}, "h2": {"model.n_heads"}, "h8": {"model.n_heads"}},
}


def test_every_preset_is_pinned_here():
    assert set(INTENDED) == set(ABLATIONS)


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_arms_differ_only_in_the_switch_under_test(name):
    ab = get(name)
    base = base_config(ab)
    ref = arm_config(base, ab.arms[0], seed=0)
    assert ref.diff(base) == {}  # the first arm is the base itself
    for arm in ab.arms[1:]:
        assert set(arm_config(base, arm, seed=0).diff(ref)) == INTENDED[name][arm.name], arm.name
    # a seed changes only the seed, the same for every arm
    assert arm_config(base, ab.arms[-1], seed=3).diff(arm_config(base, ab.arms[-1], seed=0)) == {"train.seed": (3, 0)}


def test_residual_arms_without_residual_differ_from_each_other_only_in_depth():
    ab = get("residual")
    base = base_config(ab)
    n1, n2, n3 = (arm_config(base, a, 0) for a in ab.arms[1:])
    assert set(n1.diff(n2)) == set(n2.diff(n3)) == {"model.n_layers"}
    assert [c.model.n_layers for c in (n1, n2, n3)] == [1, 2, 3]


def test_swiglu_arm_matches_the_parameter_count():
    from tinyviz.model.transformer import Transformer

    ab = get("mlp")
    base = base_config(ab)
    counts = {a.name: Transformer(arm_config(base, a, 0).model).n_params(non_embedding=False) for a in ab.arms}
    assert abs(counts["swiglu"] - counts["gelu"]) / counts["gelu"] < 0.01, counts


def test_overrides_reach_every_arm_but_the_switch_wins():
    ab = get("posemb")
    base = base_config(ab, steps=20, corpus="copy", sets=["pos_emb=rope", "d_model=32"])
    assert base.train.steps == 20 and base.train.warmup_steps == 2 and base.data.corpus == "copy"
    configs = {a.name: arm_config(base, a, 0) for a in ab.arms}
    assert {c.model.d_model for c in configs.values()} == {32}
    assert [c.model.pos_emb for c in configs.values()] == ["rope", "sinusoidal", "rope", "none"]


def test_unknown_preset_lists_the_valid_ones(capsys):
    with pytest.raises(ValueError, match="residual"):
        get("resdiual")
    assert main(["ablate", "resdiual"]) == 2
    err = capsys.readouterr().err
    assert "unknown ablation preset 'resdiual'" in err and "init, posemb, tying, residual" in err


def test_bad_set_field_gives_the_config_sentence(capsys, tmp_path):
    assert main(["ablate", "tying", "--out", str(tmp_path), "--set", "nonsense=1"]) == 2
    assert "unknown field 'nonsense' in --set" in capsys.readouterr().err
    assert main(["ablate", "tying", "--out", str(tmp_path), "--set", "d_model=30", "--set", "n_heads=4"]) == 2
    assert "d_model=30 must be divisible by n_heads=4" in capsys.readouterr().err


def _tiny(tmp_path, name, workers=1, **kw):
    return run_ablation(name, seeds=2, steps=6, workers=workers, out=tmp_path, sets=TINY, images=False,
                        sample_tokens=8, **kw)


@pytest.fixture(scope="module")
def tying(tmp_path_factory):
    return _tiny(tmp_path_factory.mktemp("tying"), "tying")


def test_writes_runs_curves_figure_and_summary(tying):
    out = tying.out
    for f in ("curves.csv", "loss.html", "summary.md", "ablation.json"):
        assert (out / f).is_file(), f
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [
        "tied-seed0", "tied-seed1", "untied-seed0", "untied-seed1"]
    with open(out / "curves.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 * 6 and rows[0].keys() == {"step", "arm", "seed", "loss", "val_loss"}
    assert tying.verdict[0] in ("reproduced", "partly", "not reproduced")


def test_summary_numbers_are_the_runs_metrics(tying):
    summary = (tying.out / "summary.md").read_text()
    saved = json.loads((tying.out / "ablation.json").read_text())["stats"]
    for arm in ("tied", "untied"):
        by_seed = {s: Run.open(tying.out / f"{arm}-seed{s}").metrics() for s in (0, 1)}
        loss_1 = [by_seed[s][0]["loss"] for s in (0, 1)]
        final = [sum(m["loss"] for m in by_seed[s][-ablations.FINAL_WINDOW:]) / 6 for s in (0, 1)]
        val = [[m["val_loss"] for m in by_seed[s] if m.get("val_loss") is not None][-1] for s in (0, 1)]
        stats = arm_stats(arm, by_seed, {s: {} for s in (0, 1)})
        assert stats.loss_1.values == tuple(loss_1) == tuple(saved[arm]["loss_1"]["values"])
        assert stats.final.values == pytest.approx(final) and stats.val.values == tuple(val)
        mean, spread = sum(final) / 2, abs(final[0] - final[1]) / 2
        assert f"{mean:.4f} ± {spread:.4f}" in summary
        assert f"{sum(loss_1) / 2:.4f} ± {abs(loss_1[0] - loss_1[1]) / 2:.4f}" in summary
        assert tying.stats[arm].final.values == stats.final.values


def test_seeds_repeat_bit_for_bit_and_arms_share_data_order(tying, tmp_path):
    again = _tiny(tmp_path, "tying")
    assert (again.out / "curves.csv").read_text() == (tying.out / "curves.csv").read_text()
    m = tying.metrics()
    assert [r["loss"] for r in m["tied"][0]] != [r["loss"] for r in m["tied"][1]]  # seeds do differ


@pytest.mark.slow  # two spawned workers each import torch
def test_worker_processes_give_the_same_numbers(tying, tmp_path):
    parallel = _tiny(tmp_path, "tying", workers=2)
    assert (parallel.out / "curves.csv").read_text() == (tying.out / "curves.csv").read_text()


def test_causal_preset_flags_leakage_and_evaluates_with_the_mask(tmp_path):
    res = run_ablation("causal", seeds=1, steps=6, workers=1, out=tmp_path, sets=TINY, images=False,
                       sample_tokens=8)
    runs = {r["arm"]: r for r in res.runs}
    assert "leakage" in runs["noncausal"]["health"] and "leakage" not in runs["causal"]["health"]
    assert runs["causal"]["causal_val_loss"] is not None and runs["noncausal"]["causal_val_loss"] is not None
    assert runs["noncausal"]["sample"]
    assert "leakage" in (tmp_path / "summary.md").read_text()


def test_figure_has_a_band_and_a_mean_per_arm_on_log_y(tying):
    fig = ablate.loss_figure(tying.metrics(), "t")
    assert fig.layout.yaxis.type == "log"
    names = [t.name for t in fig.data if t.showlegend is not False]
    assert names == ["tied", "tied (val)", "untied", "untied (val)"]
    assert sum(t.fill == "toself" for t in fig.data) == 2


def test_summarize_rebuilds_the_same_summary_from_the_folder(tying):
    before = (tying.out / "summary.md").read_text()
    again = ablate.summarize(tying.out, images=False)
    assert (tying.out / "summary.md").read_text() == before
    assert again.verdict == tying.verdict and again.stats["tied"].final == tying.stats["tied"].final


def test_reuse_copies_a_finished_run_with_the_same_config_and_changes_no_number(tying, tmp_path):
    # posemb's reference arm (learned) is tying's reference arm (tied): same config but the preset label
    reused = _tiny(tmp_path / "reused", "posemb", reuse=[str(tying.out)])
    fresh = _tiny(tmp_path / "fresh", "posemb")
    assert (reused.out / "curves.csv").read_bytes() == (fresh.out / "curves.csv").read_bytes()
    assert reused.stats == fresh.stats and reused.verdict == fresh.verdict
    sources = {r["arm"]: r["reused_from"] for r in reused.runs if r["seed"] == 0}
    assert sources == {"learned": str(tying.out / "tied-seed0"), "sinusoidal": None, "rope": None, "none": None}
    rows = json.loads((reused.out / "results.json").read_text())["rows"]
    assert {r["run"]: r["reused_from"] for r in rows if r["reused_from"]} == {
        f"learned-seed{s}": str(tying.out / f"tied-seed{s}") for s in (0, 1)}
    assert Run.open(reused.out / "learned-seed1").config.preset == "ablate-posemb"  # relabelled, source untouched
    assert Run.open(tying.out / "tied-seed1").config.preset == "ablate-tying"
    for r in reused.runs:  # the extras are evaluated again, not copied: the same greedy text and causal val loss
        twin = next(f for f in fresh.runs if (f["arm"], f["seed"]) == (r["arm"], r["seed"]))
        assert (r["sample"], r["causal_val_loss"], r["steps_done"]) == (twin["sample"], twin["causal_val_loss"],
                                                                        twin["steps_done"])


def test_reuse_of_its_own_folder_trains_only_what_did_not_finish(tying, tmp_path, monkeypatch):
    import shutil

    from tinyviz.training.session import TrainingSession

    out = tmp_path / "stopped"
    shutil.copytree(tying.out, out)
    run = Run.open(out / "untied-seed1")
    run.write_state(status="stopped", message="stopped by request")  # as a stop mid-sweep leaves it
    started = []
    real_start = TrainingSession.start.__func__
    monkeypatch.setattr(TrainingSession, "start",
                        classmethod(lambda cls, cfg, path, **kw: started.append(path.name) or real_start(cls, cfg, path,
                                                                                                          **kw)))
    again = _tiny(out, "tying", reuse=[str(out)])
    assert started == ["untied-seed1"]
    assert (again.out / "curves.csv").read_bytes() == (tying.out / "curves.csv").read_bytes()
    assert again.stats == tying.stats


def test_reuse_of_a_missing_folder_is_a_sentence_unless_it_is_the_output(tmp_path, capsys):
    args = ["ablate", "tying", "--seeds", "1", "--steps", "2", "--out", str(tmp_path / "o"),
            *[a for s in TINY for a in ("--set", s)]]
    assert main([*args, "--reuse", str(tmp_path / "nowhere")]) == 2
    assert "--reuse" in capsys.readouterr().err and not (tmp_path / "o").exists()
    assert main([*args, "--reuse", str(tmp_path / "o")]) == 0  # a first run with --reuse on its own --out trains
    assert "copied" not in capsys.readouterr().err


def test_ctrl_c_mid_ablation_says_how_to_go_on_and_reuse_finishes_it(tmp_path, capsys, monkeypatch):
    from tinyviz.experiments import executors

    real, calls = executors.train_one, []

    def interrupted_after_the_first_run(job, **kw):
        calls.append(job["path"])
        if len(calls) == 2:
            raise KeyboardInterrupt  # the person presses Ctrl-C during the second run
        return real(job, **kw)

    out = tmp_path / "abl"
    args = ["ablate", "tying", "--seeds", "1", "--steps", "6", "--workers", "1", "--out", str(out),
            *[a for s in TINY for a in ("--set", s)]]
    monkeypatch.setattr(executors, "train_one", interrupted_after_the_first_run)
    assert main(args) == 130
    err = capsys.readouterr().err
    assert f"--reuse {out}" in err and "kept" in err
    seen = []
    monkeypatch.setattr(executors, "train_one",
                        lambda job, **kw: seen.append((Path(job["path"]).name, bool(job.get("reused_from"))))
                        or real(job, **kw))
    assert main([*args, "--reuse", str(out)]) == 0
    finished_first = Path(calls[0]).name
    assert sorted(seen) == sorted([(finished_first, True), (Path(calls[1]).name, False)])  # only the cut run trains
    assert "(1 of them finished runs with the same config" in capsys.readouterr().err
