"""Models trained elsewhere become ordinary run folders; runs become Hugging Face folders.

``import_model(source, out)`` reads a nanoGPT ``ckpt.pt``, a llama2.c ``.bin`` or a Hugging Face
folder (GPT-2 or Llama), checks it completely (sizes, keys, tokenizer, memory) before writing
anything, and writes config.json, tokenizer.json and model.safetensors with state "imported" and
the source's path and sha256 in the metadata. Nothing is downloaded, nothing is unpickled outside
``torch.load(weights_only=True)`` and a no-globals unpickler for ``meta.pkl``.

``export_hf(run, out)`` writes config.json + model.safetensors (+ tokenizer.json when the run's
tokenizer is a Hugging Face one) that ``transformers.AutoModelForCausalLM.from_pretrained`` loads.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from tinyviz import resources
from tinyviz.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from tinyviz.data.foreign import HFTokenizer, Llama2cTokenizer, TokenizerFileError, read_meta_pkl
from tinyviz.data.text import CharTokenizer
from tinyviz.model import formats
from tinyviz.model.formats import FormatError
from tinyviz.model.transformer import Transformer
from tinyviz.training.runs import MODEL, Run, RunError, atomic_save_tensors, atomic_write, atomic_write_json

GPT2_BPE_VOCABS = (50257, 50304)  # GPT-2's tokenizer, and nanoGPT's padded copy of it
DEFAULT_PROMPT = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park."


class ImportRefused(ValueError):
    """Input that cannot be imported; the message is one sentence saying what and what to do."""


@dataclass
class Source:
    """What was found at the path: the format and the files it uses."""

    kind: str  # nanogpt | llama2c | hf
    model_file: Path
    config_file: Path | None = None
    tokenizer_file: Path | None = None
    notes: list[str] = field(default_factory=list)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# -- memory ------------------------------------------------------------------------------------------------
def check_memory(cfg: ModelConfig, what: str) -> None:
    """Refuse, before any tensor is read, a model that does not fit (tinyviz.resources' inference estimate)."""
    resources.check_fits(cfg, "inference", label=what,
                         advice="nothing was loaded; free some memory or open it on a machine with more")


# -- finding what the path holds ----------------------------------------------------------------------------
def _is_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def _looks_safetensors(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < (1 << 30)


def find_source(path: Path) -> Source:
    """The format at ``path`` (a file or a folder), or one sentence saying why none was recognised."""
    path = Path(path)
    if not path.exists():
        raise ImportRefused(f"nothing at '{path}'; give a nanoGPT ckpt.pt, a llama2.c .bin or a Hugging Face folder.")
    if path.is_dir():
        if (path / "config.json").exists():
            st = path / "model.safetensors"
            if not st.exists():
                what = "pytorch_model.bin" if (path / "pytorch_model.bin").exists() else "no weights"
                raise ImportRefused(f"'{path}' has config.json but {what} instead of model.safetensors; save the model "
                                   "with save_pretrained(safe_serialization=True) (sharded checkpoints are not read).")
            return Source("hf", st, path / "config.json")
        if (path / "ckpt.pt").exists():
            return Source("nanogpt", path / "ckpt.pt")
        bins = sorted(p for p in path.glob("*.bin") if not p.name.startswith("tok"))
        if len(bins) == 1:
            return find_source(bins[0])
        raise ImportRefused(f"'{path}' holds none of the files tinyviz opens (config.json + model.safetensors, "
                           "ckpt.pt, or one llama2.c model .bin); point at the model file itself.")
    if path.stat().st_size == 0:
        raise ImportRefused(f"'{path}' is empty.")
    if path.name == "config.json":
        return find_source(path.parent)
    if _is_zip(path):
        return Source("nanogpt", path)
    if _looks_safetensors(path):
        if not (path.parent / "config.json").exists():
            raise ImportRefused(f"'{path}' is a safetensors file without a config.json beside it; put the Hugging Face "
                               "config.json in the same folder.")
        return Source("hf", path, path.parent / "config.json")
    with open(path, "rb") as f:
        head = f.read(8)
    if head[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05"):
        raise ImportRefused(f"'{path}' is a bare pickle, not a torch.save zip file; tinyviz never unpickles "
                           "untrusted files: re-save it with a current torch.save.")
    return Source("llama2c", path)


# -- reading each format ---------------------------------------------------------------------------------------
def _torch_load(path: Path) -> dict:
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).split("\n")[0].strip()[:160]
        raise ImportRefused(f"'{path.name}' was refused: it asks torch.load for more than tensors and plain data "
                           f"({first}), and tinyviz loads checkpoints with weights_only=True, so nothing in it "
                           "was run.") from None
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        raise ImportRefused(f"'{path.name}' is not a readable torch checkpoint ({str(e).splitlines()[0][:120]}); "
                           "the file is truncated or damaged.") from None
    if not isinstance(obj, dict):
        raise ImportRefused(f"'{path.name}' holds a {type(obj).__name__}, not nanoGPT's checkpoint dict.")
    return obj


def _read_nanogpt(src: Source) -> tuple[formats.Mapped, int]:
    ckpt = _torch_load(src.model_file)
    if not isinstance(ckpt.get("model"), dict) or not isinstance(ckpt.get("model_args"), dict):
        raise ImportRefused(f"'{src.model_file.name}' has no 'model' and 'model_args' entries, so it is not a nanoGPT "
                           "checkpoint (nanoGPT's train.py writes model, optimizer, model_args, iter_num, config).")
    args = ckpt["model_args"]
    try:
        shape_cfg = ModelConfig(n_layers=int(args["n_layer"]), n_heads=int(args["n_head"]), d_model=int(args["n_embd"]),
                                n_ctx=int(args["block_size"]), d_vocab=int(args["vocab_size"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ImportRefused(f"'{src.model_file.name}' has model_args that do not describe a model ({e}).") from None
    check_memory(shape_cfg, f"'{src.model_file.name}'")
    mapped = formats.nanogpt_to_tinyviz(dict(ckpt["model"]), args, source=src.model_file.name)
    step = ckpt.get("iter_num", 0)
    return mapped, int(step) if isinstance(step, (int, float)) else 0


def _read_hf(src: Source) -> tuple[formats.Mapped, int]:
    try:
        hf = json.loads(src.config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ImportRefused(f"'{src.config_file}' is not valid JSON ({e}).") from None
    if not isinstance(hf, dict):
        raise ImportRefused(f"'{src.config_file}' must hold a JSON object.")
    archs = hf.get("architectures") or []
    kind = hf.get("model_type")
    if "GPT2LMHeadModel" in archs or (not archs and kind == "gpt2"):
        cfg = formats.gpt2_config(hf, source="config.json")
        mapper = formats.gpt2_hf_to_tinyviz
    elif "LlamaForCausalLM" in archs or (not archs and kind == "llama"):
        cfg = formats.llama_config(hf, source="config.json")
        mapper = formats.llama_hf_to_tinyviz
    else:
        name = ", ".join(archs) or kind or "no architecture"
        raise ImportRefused(f"config.json describes {name}; tinyviz opens GPT2LMHeadModel and LlamaForCausalLM.")
    check_memory(cfg, f"'{src.model_file.parent.name}'")
    try:
        with safe_open(str(src.model_file), framework="pt") as f:
            sd = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ImportRefused(f"'{src.model_file.name}' is not a readable safetensors file ({str(e)[:100]}).") from None
    return mapper(sd, hf, source=src.model_file.name), 0


def _read_llama2c(src: Source) -> tuple[formats.Mapped, int]:
    size = src.model_file.stat().st_size
    with open(src.model_file, "rb") as f:
        head = f.read(256)
    header = formats.read_llama2c_header(head, size, source=f"'{src.model_file.name}'")
    check_memory(header.config(src.model_file.name), f"'{src.model_file.name}'")
    floats = np.memmap(src.model_file, dtype="<f4", mode="r", offset=header.offset)
    return formats.llama2c_to_tinyviz(floats, header, source=src.model_file.name), 0


_READERS = {"nanogpt": _read_nanogpt, "hf": _read_hf, "llama2c": _read_llama2c}


# -- tokenizers --------------------------------------------------------------------------------------------
def _tokenizer_candidates(src: Source) -> list[Path]:
    folder = src.model_file.parent
    if src.kind == "hf":
        return [folder / "tokenizer.json"]
    if src.kind == "nanogpt":
        return [folder / "meta.pkl", folder / "tokenizer.json"]
    return [folder / "tokenizer.bin", *sorted(folder.glob("tok*.bin"))]


def load_tokenizer(path: Path, model_vocab: int):
    """The tokenizer in ``path`` (tokenizer.json, meta.pkl or a llama2.c tokenizer.bin, told apart by content)."""
    data = Path(path).read_bytes()
    name = Path(path).name
    if data[:1] == b"\x80" or name.endswith(".pkl"):
        chars = read_meta_pkl(data, source=f"'{name}'")
        return CharTokenizer(chars), chars
    if data.lstrip()[:1] == b"{":
        return HFTokenizer.from_bytes(data, source=f"'{name}'"), None
    return Llama2cTokenizer.from_file(data, model_vocab, source=f"'{name}'"), None


def _char_reorder(mapped: formats.Mapped, chars_in_id_order: list[str]) -> None:
    """tinyviz's CharTokenizer numbers characters in sorted order; nanoGPT's prepare.py does too, but a
    meta.pkl need not. Reorder the embedding (and unembedding) rows so each id means the same character."""
    order = sorted(range(len(chars_in_id_order)), key=lambda i: chars_in_id_order[i])
    if order == list(range(len(order))):
        return
    idx = torch.tensor(order)
    for key in ("W_E.weight", "W_U.weight"):
        if key in mapped.tensors:
            mapped.tensors[key] = mapped.tensors[key][idx].contiguous()
    mapped.notes.append("the meta.pkl ids are not in sorted-character order; the embedding rows were reordered")


def _resolve_tokenizer(src: Source, mapped: formats.Mapped, tokenizer_path: Path | None):
    V = mapped.config.d_vocab
    path = Path(tokenizer_path) if tokenizer_path else next((p for p in _tokenizer_candidates(src) if p.exists()), None)
    if path is None:
        if src.kind == "nanogpt" and V in GPT2_BPE_VOCABS:
            raise ImportRefused(f"this nanoGPT checkpoint uses GPT-2's BPE vocabulary ({V} tokens) and tinyviz "
                               "downloads nothing: pass GPT-2's tokenizer.json with --tokenizer.")
        want = {"nanogpt": "its meta.pkl (or a tokenizer.json)", "llama2c": "its tokenizer.bin",
                "hf": "its tokenizer.json"}[src.kind]
        raise ImportRefused(f"no tokenizer found beside '{src.model_file.name}'; pass {want} with --tokenizer.")
    if not path.is_file():
        raise ImportRefused(f"no tokenizer file at '{path}'.")
    try:
        tok, chars = load_tokenizer(path, V)
    except TokenizerFileError as e:
        raise ImportRefused(str(e)) from None
    if chars is not None:
        if len(chars) != V:
            raise ImportRefused(f"'{path.name}' has {len(chars)} characters but the model's vocabulary has {V} tokens; "
                               "the tokenizer belongs to another model.")
        _char_reorder(mapped, chars)
    elif tok.vocab_size > V:
        raise ImportRefused(f"'{path.name}' has {tok.vocab_size} tokens but the model's vocabulary has only {V}; "
                           "the tokenizer belongs to another model.")
    elif tok.vocab_size < V:
        if V - tok.vocab_size > 1024:
            raise ImportRefused(f"'{path.name}' has {tok.vocab_size} tokens but the model's vocabulary has {V}; "
                               "the tokenizer belongs to another model.")
        mapped.notes.append(f"the model has {V - tok.vocab_size} padding rows past the tokenizer's "
                            f"{tok.vocab_size} tokens (as nanoGPT's 50304)")
    return tok, path


def _probe_prompt(tok) -> str:
    text = DEFAULT_PROMPT
    return "".join(ch for ch in text if not tok.unknown_chars(ch)) or "a"


# -- the command ------------------------------------------------------------------------------------------------
@dataclass
class Imported:
    run: Run
    kind: str
    notes: list[str]
    n_params: int


def import_model(source, out, tokenizer_path=None, *, overwrite: bool = False,
                 source_label: str | None = None) -> Imported:
    """Read, check and convert ``source`` into the run folder ``out``; nothing is written unless all succeeds."""
    out = Path(out)
    from tinyviz.training.runs import check_run_name

    check_run_name(out.name)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ImportRefused(f"'{out}' already holds files; pick another --out (or pass --overwrite).")
    src = find_source(Path(source))
    try:
        mapped, step = _READERS[src.kind](src)
    except FormatError as e:
        raise ImportRefused(str(e)) from None
    tok, tok_path = _resolve_tokenizer(src, mapped, tokenizer_path)
    model = Transformer(mapped.config)
    expected = {n: p.shape for n, p in model.named_parameters()}
    missing, extra = sorted(set(expected) - set(mapped.tensors)), sorted(set(mapped.tensors) - set(expected))
    if missing or extra:  # a mapping bug, not bad input; still never write a half-right run
        raise ImportRefused(f"internal mapping error (missing {missing[:3]}, extra {extra[:3]}); please report it.")
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(mapped.tensors[n])
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise ImportRefused(f"'{src.model_file.name}' has NaN or infinite weights; the file is damaged.")
    tensors = {n: p.detach() for n, p in model.named_parameters()}
    del mapped.tensors
    meta = {
        "imported_from": {
            "format": src.kind, "path": source_label or str(Path(source).resolve()),
            "model_file": src.model_file.name, "sha256": sha256_file(src.model_file),
            "tokenizer_file": tok_path.name, "tokenizer_sha256": sha256_file(tok_path), "notes": mapped.notes,
        },
        "probe_prompt": _probe_prompt(tok),
    }
    cfg = RunConfig(model=mapped.config, train=TrainConfig(steps=max(1, step), warmup_steps=0),
                    data=DataConfig(corpus="imported", tokenizer="char" if tok.kind == "char" else "bpe"),
                    preset="imported")
    existed = out.exists()
    try:
        run = Run.create(out, cfg, tok, meta=meta, overwrite=overwrite)
        atomic_save_tensors(out / MODEL, tensors, {"step": str(step)})
        run.write_state(step=step, elapsed=0.0, status="imported",
                        message=f"imported from {src.kind} {src.model_file.name}")
    except BaseException:
        if not existed:
            shutil.rmtree(out, ignore_errors=True)
        raise
    return Imported(run, src.kind, mapped.notes, sum(t.numel() for t in tensors.values()))


def export_hf(run: Run, out) -> list[str]:
    """Write ``run`` as a Hugging Face folder; returns the files written. ExportError names a field that cannot map."""
    out = Path(out)
    hf, sd = formats.tinyviz_to_hf(run.config.model, {n: p for n, p in run.load_model().named_parameters()})
    if out.exists() and any(out.iterdir()):
        raise RunError(f"'{out}' already holds files; pick an empty --out folder.")
    out.mkdir(parents=True, exist_ok=True)
    tok = run.tokenizer()
    hf["tinyviz"] = {"run": run.name, "tokenizer_kind": tok.kind}
    atomic_write_json(out / "config.json", hf)
    atomic_save_tensors(out / "model.safetensors", sd, {"format": "pt"})
    files = ["config.json", "model.safetensors"]
    if isinstance(tok, HFTokenizer):
        atomic_write(out / "tokenizer.json", tok.tokenizer.to_str().encode())
        files.append("tokenizer.json")
    elif tok.kind == "bpe":
        atomic_write(out / "tokenizer.json", json.dumps(json.loads(tok.to_json())["tokenizer"]).encode())
        files.append("tokenizer.json")
    else:  # char and llama2.c vocabularies have no tokenizers.Tokenizer form here: keep tinyviz's JSON
        atomic_write(out / "tinyviz_tokenizer.json", tok.to_json().encode())
        files.append("tinyviz_tokenizer.json")
    return files

