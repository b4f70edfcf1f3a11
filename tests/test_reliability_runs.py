"""Hostile and broken run files: pickles never run, run names, run zips.

Run zips and pickles must never run code or write outside their folder. Faults (kill -9, NaN,
disk full, Stop) are in test_reliability_faults.py.
"""

import io
import json
import pickle
import re
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from reliability_helpers import ROOT, same_weights, tiny_cfg, weights

import tinyviz
from tinyviz import cli
from tinyviz.training import runzip
from tinyviz.training.runs import Run, RunError, check_run_name
from tinyviz.training.runzip import import_run_zip
from tinyviz.training.session import TrainingSession


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 10-step run (checkpoints at 5 and 10)."""
    out = tmp_path_factory.mktemp("trained") / "tiny"
    s = TrainingSession.start(tiny_cfg("steps=10"), out)
    assert s.train() == "done"
    return out


# -- pickles never run ----------------------------------------------------------------------------
class Payload:
    """Unpickling this creates ``marker``: the proof that foreign code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def payload_bytes(marker, kind: str) -> bytes:
    if kind == "pkl":
        return pickle.dumps({"weights": Payload(marker)})
    buf = io.BytesIO()
    torch.save({"W_E": Payload(marker)}, buf)  # the zip-of-pickle format of a .pt checkpoint
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["pkl", "pt"])
def test_the_payload_is_live(tmp_path, kind):
    """Control: the same bytes do create the marker when something does unpickle them."""
    marker = tmp_path / "ran"
    data = payload_bytes(marker, kind)
    if kind == "pkl":
        pickle.loads(data)
    else:
        torch.load(io.BytesIO(data), weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("kind", ["pkl", "pt"])
def test_pickle_as_weights_is_refused_and_never_runs(tmp_path, trained, capsys, kind):
    marker = tmp_path / "ran"
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    (run / "model.safetensors").write_bytes(payload_bytes(marker, kind))
    assert cli.main(["sample", str(run), "--prompt", "a"]) == 2
    assert "model.safetensors is damaged or not a safetensors file" in capsys.readouterr().err
    with pytest.raises(RunError):
        TrainingSession.resume(run)
    (run / "model.safetensors").unlink()
    (run / f"model.{kind}").write_bytes(payload_bytes(marker, kind))
    assert cli.main(["sample", str(run), "--prompt", "a"]) == 2
    assert "model.safetensors is missing" in capsys.readouterr().err
    (run / "train_state.safetensors").write_bytes(payload_bytes(marker, kind))
    (run / "tokenizer.json").write_bytes(payload_bytes(marker, kind))
    with pytest.raises(RunError):
        TrainingSession.resume(run)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["pkl", "pt"])
def test_pickle_in_a_run_zip_is_refused_and_never_runs(tmp_path, trained, kind):
    marker = tmp_path / "ran"
    for name in (f"model.{kind}", "model.safetensors"):
        data = zip_of(trained, extra={name: payload_bytes(marker, kind)},
                      skip={"model.safetensors"} if name == "model.safetensors" else set())
        with pytest.raises(RunError, match="not part of a tinyviz run|not a safetensors file"):
            import_run_zip(data, tmp_path / "runs", "imported")
        assert not (tmp_path / "runs" / "imported").exists()
    assert not marker.exists()


# The two audited exceptions, both for `import` of models trained elsewhere (issue 13): nanoGPT's ckpt.pt
# through torch.load(weights_only=True), and meta.pkl through an unpickler whose find_class refuses
# every global (tests/test_import.py shows payloads in both are refused and never run).
UNPICKLING_ALLOWED = {"tinyviz/training/importer.py", "tinyviz/data/foreign.py"}


def test_no_module_can_unpickle():
    """Weights load only through safetensors: nothing else in tinyviz calls an unpickler."""
    pattern = re.compile(r"\bimport pickle\b|\bpickle\.|torch\.load\(|\bjoblib\b|\bdill\b|numpy\.load\(|np\.load\(")
    offenders = [f"{p.relative_to(ROOT)}:{i}" for p in ROOT.joinpath("tinyviz").rglob("*.py")
                 if str(p.relative_to(ROOT)) not in UNPICKLING_ALLOWED
                 for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert offenders == []


def test_the_two_unpicklers_allowed_are_the_safe_ones():
    importer = (ROOT / "tinyviz/training/importer.py").read_text()
    loads = re.findall(r"torch\.load\([^)]*\)", importer)
    assert loads and all("weights_only=True" in call for call in loads), loads
    assert not re.search(r"\bpickle\.(load|loads|Unpickler)\b", importer)
    foreign = (ROOT / "tinyviz/data/foreign.py").read_text()
    assert re.findall(r"\bpickle\.(?:load|loads|Unpickler)\b", foreign) == ["pickle.Unpickler"]
    assert "_NoGlobals(io.BytesIO(data)).load()" in foreign and "torch.load" not in foreign


def test_torch_has_no_known_weights_only_unpickler_flaws():
    pin = re.search(r"^torch==(\d+)\.(\d+)", (ROOT / "requirements.txt").read_text(), re.M)
    assert pin and (int(pin[1]), int(pin[2])) >= (2, 10)
    assert tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 10)


# -- run names ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["a/b", "..", ".", "../up", "/abs", "x\\y", "ctl\x07", "nl\n", "nul\x00x",
                                  "", ".hidden", "-dash", "x" * 81, "sp ace", "é"])
def test_run_name_not_allowed(name):
    with pytest.raises(RunError, match="is not allowed; use 1-80 letters, digits"):
        check_run_name(name)


def test_run_name_allowed():
    for name in ("run-1", "my_run.v2", "A" * 80):
        assert check_run_name(name) == name


# -- run zips -----------------------------------------------------------------------------------
def zip_of(run: Path, *, prefix: str = "", extra: dict | None = None, skip=frozenset(),
           compression=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for f in sorted(run.rglob("*")):
            rel = f.relative_to(run).as_posix()
            if f.is_file() and rel not in skip:
                zf.write(f, prefix + rel)
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


def nothing_left(root: Path):
    return not root.exists() or list(root.iterdir()) == []


@pytest.mark.parametrize("prefix", ["", "shared-run/"])
def test_run_zip_imports_a_good_run(tmp_path, trained, prefix):
    run = import_run_zip(zip_of(trained, prefix=prefix), tmp_path / "runs", None)
    assert run.name == (prefix.rstrip("/") or "imported-run")
    assert same_weights(weights(run.path), weights(trained))
    assert run.snapshot_steps() == Run.open(trained).snapshot_steps()
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [run.name]  # no scratch folder left


def test_run_zip_from_a_path_and_a_file_object(tmp_path, trained):
    z = tmp_path / "r.zip"
    z.write_bytes(zip_of(trained))
    assert import_run_zip(z, tmp_path / "runs", "a").name == "a"
    with open(z, "rb") as f:
        assert import_run_zip(f, tmp_path / "runs", "b").name == "b"


@pytest.mark.parametrize("entry", ["../escaped.json", "run/../../escaped.json", "/tmp/escaped.json",
                                   "..\\escaped.json", "C:/escaped.json", "snapshots/../../escaped.json"])
def test_run_zip_entry_escaping_the_folder_is_refused(tmp_path, trained, entry):
    data = zip_of(trained, extra={entry: b"{}"})
    with pytest.raises(RunError, match="points outside the run folder"):
        import_run_zip(data, tmp_path / "runs", "x")
    assert nothing_left(tmp_path / "runs")
    assert not (tmp_path / "escaped.json").exists() and not Path("/tmp/escaped.json").exists()


def test_run_zip_symlink_is_refused(tmp_path, trained):
    buf = io.BytesIO(zip_of(trained, skip={"metrics.jsonl"}))
    with zipfile.ZipFile(buf, "a") as zf:
        info = zipfile.ZipInfo("metrics.jsonl")
        info.external_attr = (0o120777 << 16)  # S_IFLNK
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(RunError, match="is a symbolic link"):
        import_run_zip(buf.getvalue(), tmp_path / "runs", "x")
    assert nothing_left(tmp_path / "runs")


@pytest.mark.parametrize("entry", ["evil.py", "run.sh", "model.bin", "snapshots/notes.txt", ".bashrc"])
def test_run_zip_unknown_file_is_refused(tmp_path, trained, entry):
    with pytest.raises(RunError, match="is not part of a tinyviz run"):
        import_run_zip(zip_of(trained, extra={entry: b"x"}), tmp_path / "runs", "x")
    assert nothing_left(tmp_path / "runs")


def test_run_zip_duplicate_entry_is_refused(tmp_path, trained):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name it is asked to write
        data = zip_of(trained, extra={"config.json": b"{}"})
    with pytest.raises(RunError, match="holds 'config.json' twice"):
        import_run_zip(data, tmp_path / "runs", "x")


def test_run_zip_too_large_in_total(tmp_path, trained, monkeypatch):
    monkeypatch.setattr(runzip, "MAX_IMPORT_BYTES", 20_000)
    with pytest.raises(RunError, match="unpacks to more than 0.02 MB"):
        import_run_zip(zip_of(trained), tmp_path / "runs", "x")
    assert nothing_left(tmp_path / "runs")


def test_run_zip_bomb_is_refused_before_extracting(tmp_path, trained):
    bomb = b"\n" * 20_000_000  # 20 MB of newlines deflate to about 20 KB
    with pytest.raises(RunError, match="zip bomb"):
        import_run_zip(zip_of(trained, extra={"metrics.jsonl": bomb}, skip={"metrics.jsonl"}),
                       tmp_path / "runs", "x")
    assert nothing_left(tmp_path / "runs")


def test_run_zip_that_lies_about_its_sizes(tmp_path, trained):
    """The central directory declares 10 bytes for config.json; extraction stops there and the CRC fails."""
    data = bytearray(zip_of(trained, compression=zipfile.ZIP_STORED))
    cd = data.find(b"PK\x01\x02" + bytes(20))  # not needed: search by name below
    for m in re.finditer(rb"PK\x01\x02", bytes(data)):
        start = m.start()
        name_len = int.from_bytes(data[start + 28:start + 30], "little")
        if bytes(data[start + 46:start + 46 + name_len]) == b"config.json":
            data[start + 24:start + 28] = (10).to_bytes(4, "little")
    del cd
    with pytest.raises(RunError, match="damaged"):
        import_run_zip(bytes(data), tmp_path / "runs", "x")
    assert nothing_left(tmp_path / "runs")


@pytest.mark.parametrize("data, match", [
    (b"\x89PNG\r\n\x1a\n" + bytes(100), "not a readable zip archive"),
    (b"", "not a readable zip archive"),
])
def test_run_zip_not_a_zip(tmp_path, data, match):
    with pytest.raises(RunError, match=match):
        import_run_zip(data, tmp_path / "runs", "x")


def test_run_zip_without_config(tmp_path, trained):
    with pytest.raises(RunError, match="has no config.json"):
        import_run_zip(zip_of(trained, skip={"config.json"}), tmp_path / "runs", "x")


def test_run_zip_with_a_bad_config_names_the_run(tmp_path, trained):
    cfg = json.loads((trained / "config.json").read_text())
    cfg["format_version"] = tinyviz.FORMAT_VERSION + 1
    data = zip_of(trained, skip={"config.json"}, extra={"config.json": json.dumps(cfg)})
    with pytest.raises(RunError, match="^shared was written by a newer tinyviz"):
        import_run_zip(data, tmp_path / "runs", "shared")
    assert nothing_left(tmp_path / "runs")


def test_run_zip_with_mismatched_weights(tmp_path, trained):
    cfg = json.loads((trained / "config.json").read_text())
    cfg["model"]["d_model"] = 32
    data = zip_of(trained, skip={"config.json"}, extra={"config.json": json.dumps(cfg)})
    with pytest.raises(RunError, match="come from different runs"):
        import_run_zip(data, tmp_path / "runs", "x")


def test_run_zip_name_taken_or_invalid(tmp_path, trained):
    import_run_zip(zip_of(trained), tmp_path / "runs", "taken")
    with pytest.raises(RunError, match="'taken' already exists"):
        import_run_zip(zip_of(trained), tmp_path / "runs", "taken")
    with pytest.raises(RunError, match="is not allowed"):
        import_run_zip(zip_of(trained), tmp_path / "runs", "../up")


def test_run_zip_skips_what_zip_tools_add_and_can_pick_a_free_name(tmp_path, trained):
    data = zip_of(trained, prefix="shared/", extra={"__MACOSX/shared/._config.json": b"\x00\x05",
                                                     "shared/.DS_Store": b"\x00\x00\x00\x01Bud1"})
    a = import_run_zip(data, tmp_path / "runs", unique=True)
    b = import_run_zip(data, tmp_path / "runs", unique=True)
    assert (a.name, b.name) == ("shared", "shared-2")
    assert sorted(p.name for p in a.path.iterdir()) == sorted(p.name for p in trained.iterdir())


def test_the_apps_zip_upload_uses_the_same_checks(tmp_path, trained):
    """The sidebar's uploader (tinyviz.ui.uploads) delegates to import_run_zip: one implementation."""
    from tinyviz.ui.uploads import UploadError, extract_run_zip

    marker = tmp_path / "ran"
    run = extract_run_zip(zip_of(trained), tmp_path / "runs", "my run.zip")
    assert run.name == "my-run"
    for extra, match in [({"../escaped.json": b"{}"}, "points outside the run folder"),
                         ({"model.pt": payload_bytes(marker, "pt")}, "not part of a tinyviz run")]:
        with pytest.raises(UploadError, match=f"^evil.zip: .*{match}"):
            extract_run_zip(zip_of(trained, extra=extra), tmp_path / "runs", "evil.zip")
    assert not marker.exists() and not (tmp_path / "escaped.json").exists()
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["my-run"]
