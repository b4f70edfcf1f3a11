import json
import subprocess
import sys

import pytest
from conftest import TINY

from tinyviz.cli import main

SETS = [a for s in TINY for a in ("--set", s)]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "x"
    assert main(["train", "--preset", "micro", "--corpus", "tinytales", "--steps", "40", "--out", str(out), *SETS]) == 0
    return out


def test_train_writes_a_run_and_sample_repeats(run_dir, capsys):
    assert (run_dir / "model.safetensors").exists() and (run_dir / "metrics.jsonl").exists()
    capsys.readouterr()
    outs = []
    for _ in range(2):
        assert main(["sample", str(run_dir), "--prompt", "Once", "--temperature", "0", "--max-new-tokens", "30"]) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1] and outs[0].startswith("Once") and len(outs[0]) > 30


def test_heads_json_lists_every_head(run_dir, capsys):
    capsys.readouterr()
    assert main(["heads", str(run_dir), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["heads"]) == 4
    for head in data["heads"]:
        for key in ("prev_token", "induction", "sink", "self", "local", "uniform", "induction_random"):
            assert 0.0 <= head[key] <= 1.0
        assert head["label"]


def test_runs_lists_the_run(run_dir, capsys):
    assert main(["runs", "--root", str(run_dir.parent)]) == 0
    out = capsys.readouterr().out
    assert "x" in out and "40/40" in out


def test_resume_of_a_finished_run_is_a_no_op(run_dir, capsys):
    assert main(["train", "--out", str(run_dir), "--resume"]) == 0
    assert "done at step 40" in capsys.readouterr().err


@pytest.mark.parametrize("argv, words", [
    (["train", "--out", "OUT", "--set", "n_layer=2"], "unknown field 'n_layer'"),
    (["train", "--out", "OUT", "--set", "d_model=30"], "d_model=30 must be divisible by n_heads=4"),
    (["train", "--out", "OUT", "--corpus", "nosuchcorpus"], "unknown corpus 'nosuchcorpus'"),
    (["train", "--out", "OUT", "--set", "lr=0"], "lr=0.0 must be a positive number"),
    (["sample", "NORUN"], "no run folder at"),
    (["train", "--out", "OUT", "--resume"], "no run folder at"),
])
def test_bad_input_is_one_sentence_and_exit_code_2(argv, words, tmp_path, capsys):
    argv = [a.replace("OUT", str(tmp_path / "o")).replace("NORUN", str(tmp_path / "none")) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err and "Traceback" not in err


def test_the_real_entry_point_reports_errors_without_a_traceback(run_dir):
    proc = subprocess.run([sys.executable, "-m", "tinyviz", "sample", str(run_dir), "--prompt", "naïve ☃"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "never saw: 'ï' (U+00EF), '☃' (U+2603)" in proc.stderr and "Traceback" not in proc.stderr


def test_heads_scores_a_non_causal_model_as_non_causal(tmp_path, capsys, monkeypatch):
    """The CLI and the app share one head table and both pass the model's causal flag: a non-causal model
    whose heads happen to look only backwards is still scored over every key, not labelled 'uniform'."""
    import numpy as np

    from tinyviz.analysis import probes
    from tinyviz.training.runs import Run
    from tinyviz.ui import analysis

    out = tmp_path / "bidir"
    assert main(["train", "--preset", "micro", "--steps", "2", "--out", str(out), *SETS,
                 "--set", "causal=False", "--set", "warmup_steps=0"]) == 0
    run = Run.open(out)
    L, H = run.config.model.n_layers, run.config.model.n_heads

    def backwards_only(model, tokens):  # row q spreads evenly over keys 0..q: it looks causal
        T = len(tokens)
        rows = np.tril(np.ones((T, T), np.float32))
        return np.broadcast_to(rows / rows.sum(1, keepdims=True), (L, H, T, T)).copy()

    monkeypatch.setattr(probes, "attention_patterns", backwards_only)
    capsys.readouterr()
    assert main(["heads", str(out), "--json", "--prompt", "Once upon a time"]) == 0
    heads = json.loads(capsys.readouterr().out)["heads"]
    ids = run.tokenizer().encode("Once upon a time")
    app_rows = analysis.scores_frame(analysis.head_stats(backwards_only(None, ids), ids, causal=False))
    assert [{k: v for k, v in r.items() if k != "induction_random"} for r in heads] == app_rows.to_dict("records")
    assert all(r["label"] != "uniform" and r["uniform"] < 0.8 for r in heads)
