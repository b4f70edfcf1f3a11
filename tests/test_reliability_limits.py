"""Resource limits: a config that does not fit in memory is refused with a sentence before anything is
allocated, in the CLI (--set), for run folders and run zips someone sends, and in the app's Train form.

docs/reliability.md, section "Resource limits", lists the cases; `limits::x` there is a test here.
"""

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from reliability_helpers import ROOT, tiny_cfg

from tinyviz import cli, resources
from tinyviz.config import apply_overrides, preset
from tinyviz.model.transformer import Transformer
from tinyviz.resources import ResourceError, check_fits, estimate_bytes
from tinyviz.training.runs import Run, RunError
from tinyviz.training.runzip import import_run_zip
from tinyviz.training.session import TrainingSession

HUGE = ["--set", "d_model=4000000", "--set", "n_heads=1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "tiny"
    s = TrainingSession.start(tiny_cfg("steps=4"), out)
    assert s.train() == "done"
    return out


def blow_up_config(run, **model):
    """Edit a run's config.json as anyone who sends a run could."""
    cfg = json.loads((run / "config.json").read_text())
    cfg["model"].update(model)
    (run / "config.json").write_text(json.dumps(cfg))


def test_huge_model_in_the_cli_is_one_sentence_and_no_run_folder(tmp_path):
    """The issue's command, in a real process: exit 2, one sentence with the estimate, the memory and what to
    change, no traceback, and no half-made run folder left behind."""
    out = tmp_path / "huge"
    p = subprocess.run([sys.executable, "-m", "tinyviz", "train", "--preset", "micro", *HUGE, "--out", str(out)],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    lines = [line for line in p.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, p.stderr
    assert "needs about 2.0 PB of memory" in lines[0]
    assert "available (free memory" in lines[0] or "available (the container" in lines[0]
    assert "make the model smaller (d_model" in lines[0]
    assert not out.exists()


def test_the_cap_env_var_refuses_what_would_fit_and_says_to_raise_it(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv(resources.ENV_CAP, "50M")
    rc = cli.main(["train", "--out", str(tmp_path / "r"), "--preset", "lab", "--steps", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert "available (the cap TINYVIZ_MAX_MEMORY=50M)" in err and "or raise TINYVIZ_MAX_MEMORY" in err
    assert "use a smaller batch_size or n_ctx" in err  # lab's activations outweigh its 0.8 M parameters


def test_a_bad_cap_is_a_sentence(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv(resources.ENV_CAP, "lots")
    rc = cli.main(["train", "--out", str(tmp_path / "r"), "--steps", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and "TINYVIZ_MAX_MEMORY='lots' is not a memory size; use e.g. 4G" in err


@pytest.mark.parametrize("command", ["sample", "heads"])
def test_a_run_folder_whose_config_asks_for_a_huge_model(capsys, trained, tmp_path, command):
    run = tmp_path / "sent"
    shutil.copytree(trained, run)
    blow_up_config(run, d_model=4_000_000, n_heads=1)
    rc = cli.main([command, str(run), "--prompt", "Mara"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err
    assert "loading and inspecting the run 'sent' needs about" in err
    assert "open it on a machine with more memory" in err


def test_a_long_context_is_refused_for_its_attention_maps(trained, tmp_path):
    """n_ctx = 300k makes the Heads page's maps [L, H, n_ctx, n_ctx] the big term, not the weights."""
    run = tmp_path / "long"
    shutil.copytree(trained, run)
    blow_up_config(run, n_ctx=300_000)
    with pytest.raises(RunError, match=r"attention maps of an n_ctx prompt [\d.]+ TB"):
        Run.open(run).load_model()


def test_a_run_zip_with_a_huge_config_is_refused_and_nothing_lands(trained, tmp_path):
    for with_weights in (True, False):
        src = tmp_path / f"src{with_weights}"
        shutil.copytree(trained, src)
        blow_up_config(src, d_model=4_000_000, n_heads=1)
        if not with_weights:
            (src / "model.safetensors").unlink()
        zpath = tmp_path / f"huge{with_weights}.zip"
        with zipfile.ZipFile(zpath, "w") as z:
            for f in src.rglob("*"):
                if f.is_file():
                    z.write(f, f.relative_to(src).as_posix())
        root = tmp_path / f"runs{with_weights}"
        with pytest.raises(RunError, match="the run .huge. needs about 512.0 TB of memory"):
            import_run_zip(zpath, root, "huge")
        assert not (root / "huge").exists() and [p.name for p in root.iterdir()] == []


def test_the_estimate_counts_every_parameter_of_every_ablation():
    for sets in ([], ["mlp=swiglu", "bias=false"], ["norm=rmsnorm", "tie_embeddings=false", "pos_emb=rope"],
                 ["norm_position=post", "n_kv_heads=2", "pos_emb=sinusoidal"], ["norm=none", "pos_emb=none"]):
        cfg = apply_overrides(preset("micro"), sets).model
        assert estimate_bytes(cfg)["params"] == Transformer(cfg).n_params(non_embedding=False), sets


_PEAK = """
import re, sys, torch, torch.nn.functional as F
from tinyviz.config import apply_overrides, preset
from tinyviz.model.transformer import Transformer
cfg = apply_overrides(preset(sys.argv[1]), sys.argv[2:])
x = torch.randint(0, cfg.model.d_vocab, (cfg.train.batch_size, cfg.model.n_ctx))
def peak():  # VmHWM, this process's peak resident memory (ru_maxrss would carry the parent's across exec)
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
base = peak()
m = Transformer(cfg.model).train()
opt = torch.optim.AdamW(m.parameters(), fused=True)
for _ in range(2):
    loss = F.cross_entropy(m(x).view(-1, cfg.model.d_vocab), x.view(-1))
    opt.zero_grad(); loss.backward(); opt.step()
print(peak() - base)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc (Linux)")
@pytest.mark.parametrize("args", [["micro"], ["lab", "batch_size=16"]], ids=["micro", "lab_dropout"])
def test_the_estimate_is_within_a_factor_two_of_a_real_training_step(args):
    """Peak resident memory of two training steps in a fresh process against the estimate."""
    p = subprocess.run([sys.executable, "-c", _PEAK, *args], capture_output=True, text=True, cwd=ROOT,
                       timeout=120, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    measured = int(p.stdout.strip().splitlines()[-1])
    est = estimate_bytes(apply_overrides(preset(args[0]), args[1:]))["total"]
    assert measured / 2 <= est <= measured * 2, (measured, est)


def test_check_fits_passes_a_config_that_fits_and_reads_the_cap(monkeypatch):
    monkeypatch.setenv(resources.ENV_CAP, "2GiB")
    room, source = resources.available_bytes()
    assert room <= 2 * 2**30 and source
    assert check_fits(preset("micro"))["total"] < room
    with pytest.raises(ResourceError):
        check_fits(apply_overrides(preset("micro"), ["d_model=4096", "n_heads=4", "n_layers=8"]))


class _Spy:
    """A tokenizer that records how much text it was asked to encode."""

    def __init__(self, tok):
        self.tok, self.seen = tok, []

    def encode(self, text, **kw):
        self.seen.append(len(text))
        return self.tok.encode(text, **kw)


def test_a_1mb_prompt_is_cut_to_its_tail_before_tokenizing(trained):
    """A 1 MB paste: only a tail that holds the last n_ctx tokens is tokenized, with a notice."""
    from tinyviz.model.sampling import MAX_CHARS_PER_TOKEN, encode_prompt

    run = Run.open(trained)
    tok = _Spy(run.tokenizer())
    n_ctx = run.config.model.n_ctx
    alphabet = tok.tok.decode(list(range(tok.tok.vocab_size)))
    text = (alphabet * (1_000_000 // len(alphabet) + 1))[:1_000_000]
    ids, notices = encode_prompt(tok, text, n_ctx)
    assert tok.seen == [n_ctx * MAX_CHARS_PER_TOKEN]
    assert ids == tok.tok.encode(text[-(n_ctx - 1):])  # the same last tokens as encoding it all
    assert notices == [f"the prompt has 1,000,000 characters, far more than the model sees (n_ctx={n_ctx} tokens); "
                       f"only its end was read and its last {n_ctx - 1} tokens were used."]


def test_a_page_of_unknown_characters_is_a_short_sentence(trained):
    from tinyviz.data.text import UnknownCharactersError
    from tinyviz.model.sampling import encode_prompt

    text = "".join(chr(0x4E00 + i) for i in range(20_000))
    with pytest.raises(UnknownCharactersError) as e:
        encode_prompt(Run.open(trained).tokenizer(), text, 16)
    assert len(str(e.value)) < 600 and " more; remove or replace them." in str(e.value)
