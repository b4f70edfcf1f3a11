"""Tokenizers, text loading with validation, and seeded train/val batches.

Two tokenizers share one interface (``kind``, ``vocab_size``, ``encode``, ``decode``,
``token_str``, ``unknown_chars``, ``to_json``/``from_json``): ``CharTokenizer`` (one id per
character) and ``BPETokenizer`` (byte-level BPE trained locally with HuggingFace
``tokenizers``). Both serialise to plain JSON; nothing here unpickles.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from tinyviz.config import DataConfig, RunConfig, check_bpe_vocab_size
from tinyviz.data import corpora

MAX_CORPUS_BYTES = 50_000_000

VISIBLE = {"\n": "⏎", " ": "␣", "\t": "⇥"}  # how token labels show whitespace
# Control characters other than \t \n \r, including DEL and the C1 block that mis-decoded cp1252 leaves.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_BINARY_MAGIC = {b"\x89PNG": "a PNG image", b"GIF8": "a GIF image", b"\xff\xd8\xff": "a JPEG image",
                 b"%PDF": "a PDF", b"PK\x03\x04": "a zip archive (or .docx/.xlsx)", b"\x1f\x8b": "a gzip archive"}


class CorpusError(ValueError):
    """Text that cannot be used as a corpus; the message says what is wrong and what to do."""


class UnknownCharactersError(ValueError):
    """Text with characters outside a tokenizer's vocabulary; ``chars`` lists them in order of appearance."""

    def __init__(self, chars: list[str], source: str = "the prompt"):
        self.chars = chars
        super().__init__(f"{source} has characters this model never saw: {describe_chars(chars)}; "
                         "remove or replace them.")


def describe_chars(chars: Sequence[str], most: int = 20) -> str:
    """``'é' (U+00E9), '\\t' (U+0009)``: repr, plus the code point for anything but printable ASCII; past
    `most` characters, "and N more" (a pasted page of foreign text would make a sentence of megabytes)."""
    shown = ", ".join(repr(c) if " " <= c <= "~" else f"{c!r} (U+{ord(c):04X})" for c in chars[:most])
    return shown + (f" and {len(chars) - most:,} more" if len(chars) > most else "")


def _ids_list(ids) -> list[int]:
    return ids.tolist() if isinstance(ids, torch.Tensor) else [int(i) for i in ids]


class CharTokenizer:
    """One token per character; ids index the sorted unique characters."""

    kind = "char"

    def __init__(self, chars: list[str]):
        if any(not isinstance(c, str) or len(c) != 1 for c in chars):
            raise ValueError("a character tokenizer needs a list of single characters.")
        self.chars = sorted(set(chars))
        if not self.chars:
            raise ValueError("a character tokenizer needs at least one character.")
        # Sorted code points let numpy map a whole corpus to ids at once (searchsorted), no Python loop.
        self._codes = np.array([ord(c) for c in self.chars], dtype=np.uint32)

    @classmethod
    def train(cls, text: str) -> CharTokenizer:
        return cls(list(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def _lookup(self, text: str) -> tuple[np.ndarray, list[str]]:
        """Ids [len(text)] (garbage where unknown), and the unknown characters in order of appearance."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        ids = np.searchsorted(self._codes, codes)
        known = self._codes[np.minimum(ids, len(self._codes) - 1)] == codes
        unknown = [] if known.all() else list(dict.fromkeys(map(chr, codes[~known].tolist())))
        return ids, unknown

    def unknown_chars(self, text: str) -> list[str]:
        """Characters of ``text`` outside the vocabulary, deduplicated, in order of first appearance."""
        return self._lookup(text)[1]

    def encode_tensor(self, text: str, *, source: str = "the prompt") -> torch.Tensor:
        """Ids of ``text`` as an int64 tensor [len(text)]; fast for a whole corpus."""
        ids, unknown = self._lookup(text)
        if unknown:
            raise UnknownCharactersError(unknown, source)
        return torch.from_numpy(ids.astype(np.int64))

    def encode(self, text: str, *, source: str = "the prompt") -> list[int]:
        """Ids of ``text``; ``UnknownCharactersError`` names every character outside the vocabulary."""
        return self.encode_tensor(text, source=source).tolist()

    def decode(self, ids) -> str:
        """Text of ``ids`` (a list of ints or a 1-D tensor)."""
        ids = _ids_list(ids)
        if ids and not 0 <= min(ids) <= max(ids) < self.vocab_size:
            raise ValueError(f"token ids must be in [0, {self.vocab_size}), got {min(ids)}..{max(ids)}.")
        return "".join(self.chars[i] for i in ids)

    def token_str(self, i: int) -> str:
        """A visible label for token ``i``: ⏎ for a newline, ␣ for a space, ⇥ for a tab."""
        return visible(self.chars[i])

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, "chars": self.chars})

    @classmethod
    def from_json(cls, s: str) -> CharTokenizer:
        d = _parse_json(s, cls.kind)
        if not isinstance(d.get("chars"), list):
            raise ValueError("the character tokenizer JSON has no 'chars' list; the file is damaged.")
        return cls(d["chars"])


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet: the printable stand-in character of each byte -> the byte."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = list(bs)
    extra = 0
    for b in range(256):
        if b not in bs:  # bytes without a printable glyph get stand-ins from U+0100 up, in byte order
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(bs, cs)}


_BYTE_DECODER = _byte_decoder()


class LibraryTokenizer:
    """What every tokenizer backed by the tokenizers library shares: any string encodes (none of its
    characters is unknown)."""

    def __init__(self, tokenizer: Tokenizer):
        self._tok = tokenizer

    def unknown_chars(self, text: str) -> list[str]:
        return []

    def encode(self, text: str, *, source: str = "the prompt") -> list[int]:
        return self._tok.encode(text).ids

    def encode_tensor(self, text: str, *, source: str = "the prompt") -> torch.Tensor:
        """Ids of ``text`` as an int64 tensor [n_tokens]."""
        return torch.tensor(self.encode(text), dtype=torch.long)


class BPETokenizer(LibraryTokenizer):
    """Byte-level BPE: any string encodes (no unknown characters) and decodes back exactly."""

    kind = "bpe"

    @classmethod
    def train(cls, text: str, vocab_size: int) -> BPETokenizer:
        """Learn merges from ``text`` up to ``vocab_size`` tokens (300..8192; fewer if the text is small)."""
        check_bpe_vocab_size(vocab_size)
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      special_tokens=[], show_progress=False)
        tok.train_from_iterator([text], trainer=trainer)
        return cls(tok)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def decode(self, ids) -> str:
        """Text of ``ids`` (a list of ints or a 1-D tensor); exact inverse of ``encode``."""
        ids = _ids_list(ids)
        if ids and not 0 <= min(ids) <= max(ids) < self.vocab_size:
            raise ValueError(f"token ids must be in [0, {self.vocab_size}), got {min(ids)}..{max(ids)}.")
        return self._tok.decode(ids, skip_special_tokens=False)

    def token_str(self, i: int) -> str:
        """The text of token ``i`` with ⏎/␣/⇥ for whitespace; a partial UTF-8 byte shows as ``\\xNN``."""
        raw = bytes(_BYTE_DECODER[c] for c in self._tok.id_to_token(i))
        return visible(raw.decode("utf-8", errors="backslashreplace"))

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, "tokenizer": json.loads(self._tok.to_str())})

    @classmethod
    def from_json(cls, s: str) -> BPETokenizer:
        d = _parse_json(s, cls.kind)
        try:
            return cls(Tokenizer.from_str(json.dumps(d["tokenizer"])))
        except Exception as e:  # a missing key, or tokenizers' own exception for malformed JSON
            raise ValueError(f"the BPE tokenizer JSON is damaged ({e}); retrain or re-save the run.") from e


AnyTokenizer = CharTokenizer | BPETokenizer
_TOKENIZERS = {cls.kind: cls for cls in (CharTokenizer, BPETokenizer)}


def _register_foreign() -> None:
    """Add the tokenizers of imported models (tinyviz/data/foreign.py imports this module, hence lazily)."""
    if "llama2c" not in _TOKENIZERS:
        from tinyviz.data.foreign import HFTokenizer, Llama2cTokenizer

        _TOKENIZERS.update({cls.kind: cls for cls in (Llama2cTokenizer, HFTokenizer)})


def _parse_json(s: str, kind: str | None = None) -> dict:
    _register_foreign()
    try:
        d = json.loads(s)
    except (TypeError, ValueError) as e:
        raise ValueError(f"the tokenizer JSON is not valid JSON ({e}); the file is damaged.") from None
    if not isinstance(d, dict) or d.get("kind") not in _TOKENIZERS:
        raise ValueError(f"the tokenizer JSON needs a 'kind' of {' or '.join(map(repr, _TOKENIZERS))}; "
                         "the file is damaged or not a tinyviz tokenizer.")
    if kind is not None and d["kind"] != kind:
        raise ValueError(f"the tokenizer JSON is of kind {d['kind']!r}, not {kind!r}.")
    return d


def tokenizer_from_json(s: str) -> AnyTokenizer:
    """The tokenizer saved by ``to_json``, whichever kind it is."""
    return _TOKENIZERS[_parse_json(s)["kind"]].from_json(s)


def visible(text: str, spaces: bool = True) -> str:
    """text with ⏎ for newlines, ⇥ for tabs and (unless spaces=False) ␣ for spaces, as token labels show it."""
    return "".join(VISIBLE.get(c, c) if spaces or c != " " else c for c in text)


def build_tokenizer(text: str, data_cfg: DataConfig) -> AnyTokenizer:
    """A tokenizer trained on ``text`` as ``data_cfg.tokenizer`` asks (char, or bpe of bpe_vocab_size)."""
    if data_cfg.tokenizer == "bpe":
        return BPETokenizer.train(text, data_cfg.bpe_vocab_size)
    return CharTokenizer.train(text)


def _megabytes(n: int) -> str:
    return f"{n / 1e6:g} MB"


def validate_text(text: str, *, source: str = "the corpus") -> str:
    """``text`` with line ends normalised to ``\\n`` and a leading BOM dropped, or a ``CorpusError``."""
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    if not text:
        raise CorpusError(f"{source} is empty; use a text with at least a few thousand characters.")
    if not text.strip():
        raise CorpusError(f"{source} contains only whitespace; use a text with words in it.")
    if "\x00" in text:
        raise CorpusError(f"{source} contains NUL characters, so it looks like a binary file, not text; "
                          "use a plain UTF-8 .txt file.")
    bad = _CONTROL.search(text)
    if bad:
        found = list(dict.fromkeys(_CONTROL.findall(text)))
        line = text.count("\n", 0, bad.start()) + 1
        raise CorpusError(f"{source} contains control characters {describe_chars(found)} (first on line {line}); "
                          "remove them or save the text as plain UTF-8.")
    if len(set(text)) < 2:
        raise CorpusError(f"{source} uses only one distinct character ({text[0]!r}); a model needs varied text.")
    return text


def decode_bytes(data: bytes, *, source: str = "the file") -> str:
    """Text of a file's bytes (UTF-8, UTF-8 with BOM, or UTF-16 with BOM), validated; else ``CorpusError``."""
    if not data:
        raise CorpusError(f"{source} is empty; use a text with at least a few thousand characters.")
    if len(data) > MAX_CORPUS_BYTES:  # an upload arrives here without load_text's size check
        raise CorpusError(f"{source} is {_megabytes(len(data))} ({len(data):,} bytes), over the "
                          f"{_megabytes(MAX_CORPUS_BYTES)} limit for a corpus; use a smaller file or cut it down.")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return validate_text(data.decode("utf-16"), source=source)
        except UnicodeDecodeError:
            raise CorpusError(f"{source} starts like UTF-16 text but does not decode; re-save it as UTF-8.") from None
    for magic, what in _BINARY_MAGIC.items():
        if data.startswith(magic):
            raise CorpusError(f"{source} looks like {what}, not text; use a plain UTF-8 .txt file.")
    if b"\x00" in data:
        raise CorpusError(f"{source} contains NUL bytes, so it looks like a binary file, not text "
                          "(or UTF-16 without a byte-order mark); use a plain UTF-8 .txt file.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise CorpusError(f"{source} is not UTF-8 text (byte 0x{data[e.start]:02x} at position {e.start}; "
                          "it may be Latin-1 or Windows-1252); re-save it as UTF-8 and try again.") from None
    return validate_text(text, source=source)


def load_text(path) -> str:
    """The UTF-8 text of the file at ``path``, validated and with ``\\n`` line ends; else ``CorpusError``."""
    p = Path(path)
    source = f"'{path}'"
    if not p.exists():
        raise CorpusError(f"no file at {source}; check the path.")
    if p.is_dir():
        raise CorpusError(f"{source} is a folder, not a file; give the path to a .txt file.")
    size = p.stat().st_size
    if size > MAX_CORPUS_BYTES:
        raise CorpusError(f"{source} is {_megabytes(size)} ({size:,} bytes), over the "
                          f"{_megabytes(MAX_CORPUS_BYTES)} limit for a corpus; use a smaller file or cut it down.")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise CorpusError(f"cannot read {source} ({e.strerror}); check its permissions.") from None
    return decode_bytes(data, source=source)


def load_corpus(data_cfg: DataConfig) -> str:
    """The corpus text: a built-in corpus generated per ``data_cfg``, or the text file at that path."""
    name = data_cfg.corpus
    if corpora.is_builtin(name):
        return corpora.generate(name, data_cfg.corpus_chars, data_cfg.corpus_seed)
    builtins = ", ".join(corpora.CORPORA)
    if Path(name).exists():
        return load_text(name)
    if "/" in name or "\\" in name or Path(name).suffix:
        raise CorpusError(f"no file at '{name}'; check the path, or use a built-in corpus: {builtins}.")
    raise CorpusError(f"unknown corpus '{name}'; use a built-in corpus ({builtins}) or a path to a .txt file.")


@dataclass
class Prepared:
    """What training a config needs, made by ``prepare``."""
    text: str  # the corpus
    tokenizer: AnyTokenizer
    config: RunConfig  # the config, with model.d_vocab set to the fitted tokenizer's size
    data: TokenData  # the corpus's token ids, split into train and val


def prepare(cfg: RunConfig, tokenizer: AnyTokenizer | None = None, text: str | None = None) -> Prepared:
    """The one data recipe: corpus -> tokenizer -> d_vocab -> TokenData.

    Without a tokenizer one is fitted to the corpus as cfg.data asks and model.d_vocab becomes its size
    (at least 2); with one (a run's own) the config is kept as it is. text skips loading the corpus
    (a caller that has already read it)."""
    text = load_corpus(cfg.data) if text is None else text
    if tokenizer is None:
        tokenizer = build_tokenizer(text, cfg.data)
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, d_vocab=max(2, tokenizer.vocab_size)))
    return Prepared(text, tokenizer, cfg, TokenData.from_text(text, tokenizer, cfg.data.val_fraction))


class TokenData:
    """Token ids of a corpus split into train/val (val = last val_fraction of the ids), seeded batches."""

    def __init__(self, ids: torch.Tensor, val_fraction: float):
        """``ids``: int64 [n_tokens]; ``val_fraction`` in (0, 1)."""
        if ids.dim() != 1:
            raise ValueError(f"ids must be a 1-D tensor of token ids, got shape {tuple(ids.shape)}.")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction={val_fraction} must be between 0 and 1 (e.g. 0.1).")
        ids = ids.long()
        n_val = round(len(ids) * val_fraction)
        self.val_fraction = val_fraction
        self.train: torch.Tensor = ids[: len(ids) - n_val]
        self.val: torch.Tensor = ids[len(ids) - n_val:]

    @classmethod
    def from_text(cls, text: str, tokenizer: AnyTokenizer, val_fraction: float) -> TokenData:
        return cls(tokenizer.encode_tensor(text, source="the corpus"), val_fraction)

    def _split(self, split: str) -> torch.Tensor:
        if split not in ("train", "val"):
            raise ValueError(f"split={split!r} must be 'train' or 'val'.")
        return self.train if split == "train" else self.val

    def _check_split(self, split: str, n_ctx: int) -> torch.Tensor:
        data = self._split(split)
        if len(data) < n_ctx + 1:
            purpose = "training" if split == "train" else f"validation (the last {self.val_fraction:.0%})"
            raise CorpusError(f"the corpus has only {len(data)} tokens for {purpose}, but one example needs "
                              f"n_ctx + 1 = {n_ctx + 1}; use a longer text or a smaller n_ctx.")
        return data

    def check_fits(self, n_ctx: int, batch_size: int) -> None:
        """``CorpusError`` unless both splits hold at least one example of ``n_ctx + 1`` tokens.

        Examples are drawn with replacement, but a batch larger than the number of distinct training
        windows only repeats them, so that is refused too.
        """
        for split in ("train", "val"):
            self._check_split(split, n_ctx)
        windows = len(self.train) - n_ctx
        if batch_size > windows:
            raise CorpusError(f"batch_size={batch_size} is larger than the {windows} distinct training examples "
                              f"of n_ctx={n_ctx} tokens in the corpus; use batch_size={windows} or less, "
                              "or a longer text.")

    def get_batch(self, split: str, batch_size: int, n_ctx: int,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Random windows of ``split``: x, y int64 [batch_size, n_ctx]; y[:, t] is the token after x[:, t].

        The same generator state gives bit-identical batches.
        """
        data = self._check_split(split, n_ctx)
        offsets = torch.randint(len(data) - n_ctx, (batch_size,), generator=generator)
        windows = data[offsets[:, None] + torch.arange(n_ctx + 1)]  # [batch_size, n_ctx + 1]
        return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()
