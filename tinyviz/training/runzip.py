"""Importing a run someone sent as a zip of its folder, without trusting the zip.

Refused: absolute paths, '..', symlinks, unknown file names (so a pickle never lands),
duplicates, zip bombs and oversize entries (declared and actual sizes). The run's config,
tokenizer and weights must load before its folder appears under the runs root.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import stat
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path

from tinyviz.training.history import HISTORY
from tinyviz.training.runs import (
    CONFIG,
    METRICS,
    MODEL,
    SNAPSHOTS,
    STATE,
    TOKENIZER,
    TRAIN_STATE,
    Run,
    RunError,
    _write_error,
    check_run_name,
)

MAX_IMPORT_BYTES = 500_000_000  # all files of an imported run together, uncompressed
MAX_IMPORT_ENTRIES = 2000
MAX_COMPRESSION_RATIO = 200  # JSON and weights compress far less; more than this is a zip bomb
_IMPORT_FILES = {CONFIG, TOKENIZER, MODEL, TRAIN_STATE, STATE, METRICS}
_SNAPSHOT_NAME = re.compile(r"^(snapshots|history)/step_\d{7}\.safetensors$|^history/index\.json$")
_JUNK = {"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini"}  # what zip tools add; skipped, never extracted


def _is_junk(filename: str) -> bool:
    return any(part in _JUNK for part in filename.split("/"))


def _import_member_name(info, prefix: str) -> str | None:
    """The run-relative name of a zip entry (None for a folder entry), or RunError if it is not allowed."""
    raw = info.filename
    if "\\" in raw or raw.startswith("/") or re.match(r"^[A-Za-z]:", raw) or ".." in raw.split("/"):
        raise RunError(f"the zip entry {raw!r} points outside the run folder; the zip is not a tinyviz run "
                       "and was not imported.")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise RunError(f"the zip entry {raw!r} is a symbolic link; a run holds plain files only, so the zip "
                       "was not imported.")
    if _is_junk(raw):
        return None
    name = raw[len(prefix):] if prefix and raw.startswith(prefix) else raw
    if info.is_dir():
        if name.rstrip("/") in ("", SNAPSHOTS, HISTORY):
            return None
    elif name in _IMPORT_FILES or _SNAPSHOT_NAME.match(name):
        return name
    allowed = ", ".join(sorted(_IMPORT_FILES))
    raise RunError(f"the zip holds {raw!r}, which is not part of a tinyviz run (allowed: {allowed}, "
                   "snapshots/ and history/step_NNNNNNN.safetensors, history/index.json); "
                   "weights load only from safetensors, so nothing was imported.")


def import_run_zip(source, root: Path, name: str | None = None, *, fallback_name: str = "imported-run",
                   unique: bool = False) -> Run:
    """Unpack a run zip (a path, bytes or a binary file object) into ``root/name`` after checking it.

    The name is ``name``, else the folder the zip holds the run in, else ``fallback_name``; with
    ``unique`` a taken name gets ``-2``, ``-3``... instead of being refused.

    Refused with a RunError, before anything is written to ``root``: absolute or ``..`` paths,
    symbolic links, files that are not part of a run (so no pickle ever lands), duplicate entries,
    oversized or suspiciously compressed entries (declared sizes are checked first, actual bytes
    while extracting), and a config, tokenizer or weights that do not load. The run folder only
    appears, by one rename, once all of that has passed.
    """
    root = Path(root)
    with _open_zip(source) as zf:
        infos = zf.infolist()
        if len(infos) > MAX_IMPORT_ENTRIES:
            raise RunError(f"the zip has {len(infos)} entries, more than a run ever holds ({MAX_IMPORT_ENTRIES}).")
        prefix = _run_prefix(infos)
        members = _checked_members(infos, prefix)
        target = _free_target(root, check_run_name(name or (prefix.rstrip("/") if prefix else fallback_name)), unique)
        root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".import-", dir=root))
        tmp = scratch / target.name  # so any message about its files names the run, not the scratch folder
        try:
            _extract(zf, members, tmp)
            _check_loads(Run.open(tmp))
            os.replace(tmp, target)
        except RunError:
            raise
        # a damaged zip fails inside zipfile in many ways (a negative seek is a ValueError, a short
        # header an EOFError or struct.error); each is the same sentence
        except (zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError, ValueError, EOFError,
                OverflowError, struct.error) as e:
            raise RunError(f"the zip is damaged or encrypted ({str(e)[:80]}); "
                           "export the run again and retry.") from None
        except OSError as e:
            raise _write_error(target, e) from None
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return Run.open(target)


def _open_zip(source) -> zipfile.ZipFile:
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    try:
        return zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise RunError(f"the file is not a readable zip archive ({e}); export the run again and retry.") from None


def _run_prefix(infos: list[zipfile.ZipInfo]) -> str:
    """"my-run/" when the zip holds the folder (``my-run/config.json``), "" when it holds its contents."""
    files = [i for i in infos if not i.is_dir() and not _is_junk(i.filename)]
    tops = {i.filename.split("/", 1)[0] for i in infos if not _is_junk(i.filename)}
    if len(tops) == 1 and all("/" in i.filename for i in files):
        top = tops.pop()
        if f"{top}/{CONFIG}" in {i.filename for i in files}:
            return f"{top}/"
    return ""


def _checked_members(infos: list[zipfile.ZipInfo], prefix: str) -> dict[str, zipfile.ZipInfo]:
    """Run-relative name -> entry of every file to extract, after the checks on names and declared sizes."""
    members: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in infos:
        rel = _import_member_name(info, prefix)
        if rel is None:
            continue
        if rel in members:
            raise RunError(f"the zip holds {rel!r} twice; it was not made by tinyviz and was not imported.")
        members[rel] = info
        total += info.file_size
        if info.file_size > MAX_IMPORT_BYTES or total > MAX_IMPORT_BYTES:
            raise RunError(f"the zip unpacks to more than {MAX_IMPORT_BYTES / 1e6:g} MB, more than a tiny "
                           "run needs; it was not imported.")
        if info.file_size > 1_000_000 and info.file_size > MAX_COMPRESSION_RATIO * max(1, info.compress_size):
            ratio = info.file_size // max(1, info.compress_size)
            raise RunError(f"the zip entry {info.filename!r} expands {ratio} times, which is what a zip bomb "
                           "does; it was not imported.")
    if CONFIG not in members:
        raise RunError("the zip has no config.json, so it is not a tinyviz run; export the run folder as a zip.")
    return members


def _free_target(root: Path, name: str, unique: bool) -> Path:
    """root/name, or with unique the first free root/name-2, -3, ...; RunError when the name is taken."""
    target = root / name
    for n in range(2, 1000):
        if not (unique and target.exists()):
            break
        target = root / check_run_name(f"{name[:70]}-{n}")
    if target.exists():
        raise RunError(f"a run named {target.name!r} already exists; rename or delete it first, or import under "
                       "another name.")
    return target


def _extract(zf: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo], dest: Path) -> None:
    """Write the members under dest, counting the bytes: more than the entries declared is refused."""
    declared, written = sum(info.file_size for info in members.values()), 0
    for rel, info in members.items():
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(info) as src, open(path, "wb") as out:
            while chunk := src.read(1 << 20):
                written += len(chunk)
                if written > declared:
                    raise RunError("the zip holds more data than its entries declare; it was not imported.")
                out.write(chunk)


def _check_loads(run: Run) -> None:
    """The unpacked run's tokenizer and weights load (a run without weights must fit in memory)."""
    run.tokenizer()
    if run.has_weights():
        run.load_model()
    else:
        run.check_memory()


def export_run_zip(path: Path) -> bytes:
    """A zip of a run folder holding exactly the files ``import_run_zip`` takes back, inside one folder
    named after the run (so the import keeps its name): config, tokenizer, weights, optimizer state,
    state, metrics, attention snapshots and kept weights. Temp files and anything else stay out."""
    path = Path(path)
    check_run_name(path.name)
    members = [path / n for n in sorted(_IMPORT_FILES) if (path / n).is_file()]
    for folder in (SNAPSHOTS, HISTORY):
        if (path / folder).is_dir():
            members += sorted(f for f in (path / folder).iterdir()
                              if f.is_file() and _SNAPSHOT_NAME.match(f"{folder}/{f.name}"))
    buf = io.BytesIO()
    # weights barely compress: store them, deflate the text
    with zipfile.ZipFile(buf, "w") as zf:
        for f in members:
            rel = f.relative_to(path).as_posix()
            kind = zipfile.ZIP_STORED if f.suffix == ".safetensors" else zipfile.ZIP_DEFLATED
            zf.write(f, f"{path.name}/{rel}", compress_type=kind)
    return buf.getvalue()
