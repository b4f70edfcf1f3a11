"""Unpack a run folder uploaded as a zip, safely. No Streamlit here, so tests call it directly.

The checks are the core's ``tinyviz.training.runzip.import_run_zip`` (one implementation, shared with
tests and scripts): only the files a run folder holds, from the zip's root or from one folder
inside it; an absolute or '..' path, a symbolic link, any other file (a pickle, a script) or a
zip bomb refuses the whole zip; declared and actual sizes are capped; config, tokenizer and
weights must load before the run folder appears. This adds the upload's own size cap and
names the run after the uploaded file.
"""

from __future__ import annotations

import re
from pathlib import Path

from tinyviz.training.runs import Run, RunError
from tinyviz.training.runzip import import_run_zip

MAX_ZIP_BYTES = 200_000_000


class UploadError(ValueError):
    """A zip that cannot become a run; the message says why."""


def extract_run_zip(data: bytes, root: Path, filename: str = "run.zip") -> Run:
    """Unpack a zipped run folder into a new folder under root; returns the opened Run."""
    if len(data) > MAX_ZIP_BYTES:
        raise UploadError(f"the zip is {len(data) / 1e6:.0f} MB, over the {MAX_ZIP_BYTES / 1e6:.0f} MB limit.")
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(filename).stem).lstrip("._-")[:70] or "uploaded"
    try:
        run = import_run_zip(bytes(data), Path(root), fallback_name=stem, unique=True)
    except RunError as e:
        raise UploadError(f"{filename}: {e}") from None
    return run


# -- models trained elsewhere (nanoGPT, llama2.c, Hugging Face) ----------------------------------------------
_TOKENIZER_NAMES = re.compile(r"^(tokenizer\.(json|bin)|meta\.pkl|tok\d+\.bin)$")
MAX_MODEL_UPLOAD_BYTES = 200_000_000  # all files together (each is capped at 50 MB by .streamlit/config.toml)


def _safe_name(name: str, fallback: str = "imported") -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("._-")[:70] or fallback


def _unique(root: Path, name: str) -> Path:
    path, i = root / name, 2
    while path.exists():
        path, i = root / f"{name}-{i}", i + 1
    return path


def import_uploaded_model(files: list[tuple[str, bytes]], root: Path, name: str = ""):
    """Uploaded files (the model file, and its config.json / tokenizer beside it) -> a new run under root.

    The files are written to a temporary folder under their own base names (never a path the browser
    sent), the model file is the one that is neither a config nor a tokenizer, and nothing is left
    behind when the import is refused."""
    import tempfile

    from tinyviz.training.importer import import_model

    if not files:
        raise UploadError("choose the model file (and its tokenizer) to upload.")
    total = sum(len(d) for _, d in files)
    if total > MAX_MODEL_UPLOAD_BYTES:
        raise UploadError(f"the upload is {total / 1e6:.0f} MB, over the {MAX_MODEL_UPLOAD_BYTES / 1e6:.0f} MB limit; "
                          "give the model's path on the server instead.")
    names = [_safe_name(Path(n).name, f"file{i}") for i, (n, _) in enumerate(files)]
    # HF folders also hold generation_config.json, tokenizer_config.json, ...: no .json is the model
    models = [n for n in names if not n.endswith(".json") and not _TOKENIZER_NAMES.match(n)]
    if len(models) != 1:
        raise UploadError("upload exactly one model file (ckpt.pt, a llama2.c .bin or model.safetensors) with its "
                          f"config.json and tokenizer; got {', '.join(names)}.")
    with tempfile.TemporaryDirectory(prefix="tinyviz-import-") as d:
        for n, (_, data) in zip(names, files):
            (Path(d) / n).write_bytes(data)
        out = _unique(Path(root), _safe_name(name or Path(models[0]).stem))
        return import_model(Path(d) / models[0], out, source_label=f"upload: {', '.join(names)}")


def import_server_model(path: str, root: Path, tokenizer: str = "", name: str = ""):
    """A model at a path on the server (a file or a folder) -> a new run under root."""
    from tinyviz.training.importer import import_model

    if not path.strip():
        raise UploadError("type the path of a ckpt.pt, a llama2.c .bin or a Hugging Face folder on the server.")
    src = Path(path.strip()).expanduser()
    default = src.name if src.is_dir() else (src.parent.name if src.name in ("ckpt.pt", "model.safetensors")
                                             else src.stem)
    out = _unique(Path(root), _safe_name(name or default))
    return import_model(src, out, tokenizer.strip() or None)
