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
