"""Training dynamics: importance, timeline, ICL and the replay file, pinned against the numbers they restate."""

import re

import numpy as np
import pytest
import torch
from reliability_helpers import tiny_cfg

from tinyviz import cli
from tinyviz.analysis import dynamics, probes
from tinyviz.config import ModelConfig
from tinyviz.model.hooks import zero_head
from tinyviz.model.transformer import Transformer
from tinyviz.training import dynamics as store
from tinyviz.training.runs import Run
from tinyviz.training.session import TrainingSession


@pytest.fixture(scope="module")
def every_step_run(tmp_path_factory):
    """20 steps with a snapshot and float32 weights kept at every step."""
    out = tmp_path_factory.mktemp("dyn") / "r"
    cfg = tiny_cfg("n_ctx=32", "snapshot_interval=1", "history_keep=60", "history_dtype=float32", "steps=20")
    TrainingSession.start(cfg, out).train()
    return Run.open(out)


@pytest.fixture(scope="module")
def measured(every_step_run):
    return store.compute(every_step_run)


def test_importance_at_the_last_step_equals_the_ablation_numbers(every_step_run, measured):
    run = every_step_run
    model, ids = run.load_model(), store.probe_ids(run)
    cfg = run.config.model
    today = [[probes.ablation_loss(model, ids, [(l, h)])["delta"] for h in range(cfg.n_heads)]
             for l in range(cfg.n_layers)]
    assert measured["steps"][-1] == run.weights_step()
    assert measured["imp_probe"][-1].tolist() == today


@pytest.mark.parametrize("switches", [{}, {"norm_position": "post"}, {"residual": False}, {"pos_emb": "rope"}])
def test_importance_on_a_batch_equals_one_ablation_at_a_time(switches):
    torch.manual_seed(0)
    model = Transformer(ModelConfig(n_layers=3, n_heads=3, d_model=24, d_vocab=11, n_ctx=16, **switches)).eval()
    batch = torch.randint(0, 11, (3, 16))

    def loss(m):
        logits = m(batch)
        return float(torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 11), batch[:, 1:].reshape(-1)))

    with torch.no_grad():
        clean = loss(model)
        expected = np.zeros((3, 3))
        for l in range(3):
            for h in range(3):
                with model.hooks([zero_head(l, h)]):
                    expected[l, h] = loss(model) - clean
    assert dynamics.head_importance(model, batch) == pytest.approx(expected, abs=1e-5)


def test_the_timeline_crosses_where_the_snapshot_scores_cross(every_step_run, measured):
    run = every_step_run
    steps = measured["steps"]
    assert steps == run.snapshot_steps() == list(range(21))
    snaps = {s: run.load_snapshot(s)["scores"] for s in steps}
    rows = dynamics.head_timeline(steps, measured["scores"])
    assert any(r["crossed"] is not None for r in rows)
    for r in rows:
        snap_series = np.array([snaps[s][r["label"]][r["layer"]][r["head"]] for s in steps])
        assert r["score"] == pytest.approx(snap_series, abs=1e-4)
        hits = [s for s in steps if snaps[s][r["label"]][r["layer"]][r["head"]] >= r["threshold"]]
        assert r["crossed"] == (hits[0] if hits and r["named"] else None), r


def test_first_crossing_phase_change_and_icl_on_known_series():
    steps = [0, 10, 20, 40, 80]
    assert dynamics.first_crossing(steps, np.array([0.1, 0.2, 0.35, 0.2, 0.5]), 0.3) == 20
    assert dynamics.first_crossing(steps, np.zeros(5), 0.3) is None
    assert dynamics.phase_change(steps, np.array([0.0, -0.01, -0.5, -0.55, -0.56])) == 20
    assert dynamics.phase_change(steps, np.array([0.0, -0.02, -0.03, -0.3, -0.31])) == 40  # the biggest fall
    assert dynamics.phase_change(steps, np.array([0.0, 0.1, 0.2, 0.3, 0.4])) is None
    # 100 positions: the first tenth is skipped (too little context to judge), early = 10..19, late = 90..99
    curve = np.r_[np.full(10, 5.0), np.full(10, 3.0), np.full(70, 2.0), np.full(10, 1.0)]
    assert dynamics.icl_score(curve) == pytest.approx(-2.0)


def test_loss_bump_finds_a_rise_and_ignores_a_smooth_fall():
    falling = [{"step": i + 1, "loss": 3.0 - i / 100} for i in range(200)]
    assert dynamics.loss_bump(falling) is None
    bumped = [{"step": i + 1, "loss": 3.0 - i / 100 + (0.5 if 100 <= i < 120 else 0.0)} for i in range(200)]
    assert 110 <= dynamics.loss_bump(bumped) <= 125


def test_icl_and_loss_by_position_cover_every_kept_step(measured):
    S = len(measured["steps"])
    assert measured["loss_pos"].shape == (S, 31) and measured["icl"].shape == (S,)
    assert measured["imp_val"].shape == measured["imp_probe"].shape == (S, 1, 2)
    assert measured["lens_agree"].shape == (S, 2) and np.all(measured["lens_agree"][:, -1] == 1.0)


def test_the_replay_file_is_one_offline_page(every_step_run, tmp_path, capsys):
    out = tmp_path / "replay.html"
    assert cli.main(["report", str(every_step_run.path), "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert len(re.findall(r"\* plotly\.js v\d", text)) == 1  # the library's banner: inlined once
    start = text.index("<script>")
    page = text[:start] + text[text.index("</script>", start):]  # the page without the inlined library
    assert not re.search(r"<script[^>]*\bsrc=|<link[^>]*\bhref=|https?://", page)
    for needed in ("Attention through training", "Head timeline", "Loss curves", "In-context learning",
                   every_step_run.meta["corpus_sha256"], "<b>seed</b></td><td>0</td>"):
        assert needed in text, needed
    assert text.count('"method":"animate"') == 21  # a slider stop per snapshot step


def test_a_replay_file_of_a_run_without_history_says_so(tmp_path):
    TrainingSession.start(tiny_cfg("history_keep=0", "n_ctx=32"), tmp_path / "plain").train()
    assert cli.main(["report", str(tmp_path / "plain"), "--out", str(tmp_path / "p.html")]) == 0
    text = (tmp_path / "p.html").read_text(encoding="utf-8")
    assert "kept no weights history, so the timeline comes from its attention snapshots" in text


def test_report_refuses_a_folder_as_out(every_step_run, tmp_path, capsys):
    assert cli.main(["report", str(every_step_run.path), "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
