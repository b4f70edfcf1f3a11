"""The learner's journey in the app (issue 11), under Streamlit's AppTest: presets, live truth, what a learner sees."""

import json
from pathlib import Path

import pytest

from tests import test_app
from tests.test_app import app, live_html, ok
from tinyviz.config import PRESETS
from tinyviz.training.session import TrainingSession

demo, runs_root = test_app.demo, test_app.runs_root  # the same fixtures: a copy of the demo in a temporary runs folder


def cli_config_json(preset_name: str, out: Path, *sets: str) -> dict:
    """The config.json `python -m tinyviz train --preset P [--set ...] --out out` writes (before its first step)."""
    from tinyviz import cli

    args = cli.make_parser().parse_args(["train", "--preset", preset_name, "--out", str(out),
                                         *[a for s in sets for a in ("--set", s)]])
    TrainingSession.start(cli.build_config(args), out)
    return json.loads((out / "config.json").read_text())


@pytest.mark.parametrize("name", list(PRESETS))
def test_each_preset_starts_the_same_config_as_the_cli(runs_root, tmp_path, name):
    """Choosing a preset sets every field it defines (model, training and data: corpus size, tokenizer,
    BPE vocabulary), so the app's Start writes the CLI's config.json; shortened the same way in both."""
    at = ok(app("train"))
    at.selectbox(key="train_preset").set_value(name).run()
    at.number_input(key=f"cfg_{name}_train_steps").set_value(200).run()  # a field a person could set too
    at.button(key="train_start").click().run()
    from tinyviz.ui.registry import registry

    registry().stop_all()
    ok(at)
    ran = json.loads((runs_root / f"{name}-tinytales-1" / "config.json").read_text())
    assert ran == cli_config_json(name, tmp_path / "cli", "steps=200")


def test_a_data_field_edited_after_the_preset_wins(runs_root):
    at = ok(app("train"))
    at.selectbox(key="train_preset").set_value("stories-0.8m").run()
    assert at.selectbox(key="cfg_stories-0.8m_data_tokenizer").value == "bpe"  # the form shows the preset's data
    assert at.number_input(key="cfg_stories-0.8m_data_bpe").value == 361
    at.number_input(key="cfg_stories-0.8m_data_bpe").set_value(400).run()
    at.number_input(key="cfg_stories-0.8m_data_corpus_chars").set_value(50_000).run()
    at.button(key="train_start").click().run()
    from tinyviz.ui.registry import registry

    registry().stop_all()
    data = json.loads((runs_root / "stories-0.8m-tinytales-1" / "config.json").read_text())["data"]
    assert (data["tokenizer"], data["bpe_vocab_size"], data["corpus_chars"]) == ("bpe", 400, 50_000)


def test_while_training_the_sidebar_shows_the_live_step_and_start_is_a_toast(runs_root):
    """The sidebar's step is the latest logged step, not the latest checkpoint's (step 0 for the first
    100 steps of micro); 'Started' is a toast that goes away, not a banner that stays for the whole run."""
    import re
    import time

    from tinyviz.ui.registry import registry

    at = ok(app("train"))
    at.number_input(key="cfg_micro_train_steps").set_value(5000).run()
    at.number_input(key="cfg_micro_train_checkpoint_interval").set_value(1000).run()
    at.button(key="train_start").click().run()
    assert any("Started micro-tinytales-1" in t.value for t in at.toast) and not at.success
    job = registry().get(str(runs_root / "micro-tinytales-1"))
    deadline = time.monotonic() + 120
    while job.snapshot()["step"] < 20:
        assert time.monotonic() < deadline, "no steps logged"
        time.sleep(0.5)
    at.run()
    line = live_html(at, "sidebar_status_live")  # while it trains the line is kept up to date by the live feed
    assert "training" in line
    assert int(re.search(r"step (\d+) of 5000", line).group(1)) >= 20  # the checkpoint is still step 0
    registry().stop_all()
