"""The sidebar's "Open a model trained elsewhere": by a path on the server and by upload (AppTest)."""

import os
import pickle
from pathlib import Path

import pytest
from import_helpers import gpt2, llama, save_hf, sentencepiece_vocab, tokenizer_bin, write_llama2c
from test_app import app, demo, runs_root  # noqa: F401  (fixtures: a temporary runs folder holding the demo)

from tinyviz.training.runs import Run
from tinyviz.ui.uploads import UploadError, import_server_model, import_uploaded_model

AppTest = pytest.importorskip("streamlit.testing.v1").AppTest


def _llama2c_files(folder: Path) -> Path:
    folder.mkdir()
    write_llama2c(llama(vocab=300, seed=2), folder / "stories-tiny.bin")
    tokenizer_bin(*sentencepiece_vocab([(" ", -1.0), ("a", -2.0)], size=300), folder / "tokenizer.bin")
    return folder / "stories-tiny.bin"


def test_open_a_server_path_in_the_sidebar_and_every_page_works(runs_root, tmp_path):  # noqa: F811
    model = _llama2c_files(tmp_path / "src")
    at = app()
    at.sidebar.text_input(key="sidebar_import_path").input(str(model))
    at.sidebar.button(key="sidebar_import_path_go").click().run()
    assert not at.exception, [e.value for e in at.exception]
    opened = [s.value for s in at.sidebar.success if "Opened stories-tiny" in s.value]
    assert opened, [e.value for e in at.sidebar.error]
    assert Run.open(runs_root / "stories-tiny").state()["status"] == "imported"
    for page in ("heads", "predictions", "sample", "train", "compare"):
        at.switch_page(f"app_pages/{page}.py").run()
        assert not at.exception and not at.error, (page, [e.value for e in at.exception], [e.value for e in at.error])


def test_a_refused_path_is_an_error_box_and_writes_nothing(runs_root, tmp_path):  # noqa: F811
    (tmp_path / "ckpt.pt").write_bytes(pickle.dumps({"model": 1}))  # a bare pickle: never unpickled
    at = app()
    at.sidebar.text_input(key="sidebar_import_path").input(str(tmp_path / "ckpt.pt"))
    at.sidebar.button(key="sidebar_import_path_go").click().run()
    errors = [e.value for e in at.sidebar.error]
    assert len(errors) == 1 and "Not imported" in errors[0] and "never unpickles" in errors[0], errors
    assert sorted(p.name for p in runs_root.iterdir()) == ["demo"]


def test_uploaded_files_import_under_their_own_names_only(runs_root, tmp_path):  # noqa: F811
    folder = tmp_path / "hf"
    save_hf(gpt2(), folder)
    files = [(f"../../etc/{p.name}", p.read_bytes()) for p in sorted(folder.iterdir())]  # hostile paths
    res = import_uploaded_model(files, runs_root)
    assert res.run.path.parent == runs_root and res.kind == "hf"
    assert Run.open(res.run.path).meta["imported_from"]["path"].startswith("upload: ")
    again = import_uploaded_model(files, runs_root)
    assert again.run.path.name == res.run.path.name + "-2"  # never over an existing run
    with pytest.raises(UploadError, match="exactly one model file"):
        import_uploaded_model([("tokenizer.json", b"{}")], runs_root)
    with pytest.raises(ValueError, match="nothing at"):
        import_server_model(str(tmp_path / "missing"), runs_root)
    assert sorted(os.listdir(runs_root)) == ["demo", res.run.path.name, again.run.path.name]
