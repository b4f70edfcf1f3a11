"""Tokenizers of models trained elsewhere, read without running anything they contain.

- ``read_meta_pkl``: nanoGPT's char-level ``meta.pkl`` (``stoi``/``itos``) through an unpickler that
  refuses every global, so a payload is refused before anything of it runs.
- ``Llama2cTokenizer``: llama2.c's ``tokenizer.bin`` (max token length, then per token a float32
  score, an int32 length and the bytes), encoding and decoding as llama2.c's run.c does.
- ``HFTokenizer``: any Hugging Face ``tokenizer.json``, loaded with the ``tokenizers`` library.

All three serialise to plain JSON (``to_json``) and share the interface of ``tinyviz.data.text``'s
tokenizers (``kind``, ``vocab_size``, ``encode``, ``decode``, ``token_str``, ``unknown_chars``).
"""

from __future__ import annotations

import base64
import io
import json
import pickle
import re
import struct

import torch
from tokenizers import Tokenizer

from tinyviz.data.text import _BYTE_DECODER, LibraryTokenizer, UnknownCharactersError, _ids_list, visible

MAX_TOKENIZER_BYTES = 64_000_000  # Llama 3's tokenizer.json is 9 MB; 64 MB is far past any real one


class TokenizerFileError(ValueError):
    """A tokenizer file that cannot be used; the message says what is wrong and what to do."""


# -- nanoGPT meta.pkl ---------------------------------------------------------------------------------
class _NoGlobals(pickle.Unpickler):
    """An unpickler for plain data only: dicts, lists, tuples, str, int, float, bool, None.

    Every way a pickle can name a callable (GLOBAL, STACK_GLOBAL, EXT*, INST, OBJ) goes through
    ``find_class``, and persistent ids through ``persistent_load``; both refuse, so a REDUCE never
    gets a function to call and nothing in the file runs."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"it asks for the Python object {module}.{name}")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("it asks for a persistent object")


def read_meta_pkl(data: bytes, *, source: str = "meta.pkl") -> list[str]:
    """The characters of a nanoGPT char-level ``meta.pkl``, in id order (``itos[0]``, ``itos[1]``, ...).

    Refuses, with a sentence, a file that asks for any Python object (never running it), one that is
    not a pickle, or one without a usable ``itos``/``stoi``."""
    if len(data) > MAX_TOKENIZER_BYTES:
        raise TokenizerFileError(f"{source} is {len(data):,} bytes, too big for a character vocabulary.")
    try:
        meta = _NoGlobals(io.BytesIO(data)).load()
    except pickle.UnpicklingError as e:
        raise TokenizerFileError(f"{source} was refused because {e}: a nanoGPT meta.pkl holds only plain data "
                                 "(stoi, itos), so this file is not one, and nothing in it was run.") from None
    except Exception as e:  # truncated or not a pickle: EOFError, ValueError, KeyError, ...
        raise TokenizerFileError(f"{source} is not a readable pickle ({type(e).__name__}); "
                                 "give nanoGPT's meta.pkl as written by its prepare.py.") from None
    if not isinstance(meta, dict):
        raise TokenizerFileError(f"{source} holds a {type(meta).__name__}, not nanoGPT's dict with 'itos'.")
    itos, stoi = meta.get("itos"), meta.get("stoi")
    if isinstance(itos, dict) and itos:
        n = len(itos)
        if sorted(itos) != list(range(n)):
            raise TokenizerFileError(f"{source}'s itos keys are not the ids 0..{n - 1}; the file is damaged.")
        chars = [itos[i] for i in range(n)]
    elif isinstance(stoi, dict) and stoi:
        if sorted(stoi.values()) != list(range(len(stoi))):
            raise TokenizerFileError(f"{source}'s stoi values are not the ids 0..{len(stoi) - 1}; the file is damaged.")
        chars = sorted(stoi, key=stoi.get)
    else:
        raise TokenizerFileError(f"{source} has no 'itos' or 'stoi' mapping; it is not a char-level meta.pkl "
                                 "(a GPT-2 BPE model needs its tokenizer.json instead).")
    if any(not isinstance(c, str) or len(c) != 1 for c in chars) or len(set(chars)) != len(chars):
        raise TokenizerFileError(f"{source} maps ids to something other than distinct single characters; "
                                 "tinyviz reads char-level vocabularies only from meta.pkl.")
    return chars


# -- llama2.c tokenizer.bin ------------------------------------------------------------------------------
_BYTE_PIECE = re.compile(rb"<0x([0-9A-Fa-f]{2})>")
BOS, EOS = 1, 2  # llama2.c's (sentencepiece's) ids for <s> and </s>


def read_tokenizer_bin(data: bytes, vocab_size: int, *,
                       source: str = "tokenizer.bin") -> tuple[list[bytes], list[float]]:
    """Pieces and scores of the ``vocab_size`` tokens in a llama2.c ``tokenizer.bin``.

    The file does not store its vocabulary size (run.c takes it from the model), so the file must end
    exactly after ``vocab_size`` entries; otherwise its vocabulary and the model's differ."""
    if len(data) < 4:
        raise TokenizerFileError(f"{source} is {len(data)} bytes, too short for a llama2.c tokenizer.bin.")
    pieces, scores, pos = [], [], 4
    for i in range(vocab_size):
        if pos + 8 > len(data):
            raise TokenizerFileError(f"{source} ends after {i} tokens but the model has a vocabulary of {vocab_size}; "
                                     "the tokenizer belongs to another model (or the file is truncated).")
        score, length = struct.unpack_from("<fi", data, pos)
        if length < 0 or pos + 8 + length > len(data):
            raise TokenizerFileError(f"{source}'s token {i} runs past the end of the file; the file is truncated "
                                     "or not a llama2.c tokenizer.bin.")
        pieces.append(data[pos + 8 : pos + 8 + length])
        scores.append(score)
        pos += 8 + length
    if pos != len(data):
        raise TokenizerFileError(f"{source} holds more than the model's {vocab_size} tokens ({len(data) - pos:,} bytes "
                                 "left over); the tokenizer belongs to a model with a bigger vocabulary.")
    return pieces, scores


class Llama2cTokenizer:
    """llama2.c's sentencepiece-derived tokenizer, encoding and decoding as run.c does.

    encode: BOS (id 1); the dummy-prefix piece " " if the text is not empty; each UTF-8 code point as its
    piece, or its bytes as byte tokens (id = byte + 3); then repeatedly merge the adjacent pair whose
    concatenation is a piece with the highest score (the leftmost on ties) until no pair is a piece.
    decode: a piece right after BOS loses a leading space; ``<0xXX>`` pieces are that byte; a lone byte
    that is neither printable ASCII nor whitespace prints nothing (run.c's safe_printf); BOS prints
    nothing (run.c stops there)."""

    kind = "llama2c"
    # run.c ends a sample when the model draws BOS (it delimits sequences in llama2.c's training data);
    # EOS is printed like any piece. The sampler stops after drawing one of these (tinyviz.model.sampling).
    stop_ids = frozenset({BOS})

    def __init__(self, pieces: list[bytes], scores: list[float]):
        if len(pieces) != len(scores) or len(pieces) < 3:
            raise TokenizerFileError("a llama2.c tokenizer needs at least 3 tokens (<unk>, <s>, </s>).")
        self.pieces, self.scores = list(pieces), [float(s) for s in scores]
        # run.c looks pieces up by bsearch over a sorted copy; with duplicates it may find any of them.
        # Here the lowest id wins, which is what a vocabulary without duplicates (every real one) gives too.
        self._ids: dict[bytes, int] = {}
        for i, p in enumerate(self.pieces):
            self._ids.setdefault(p, i)

    @classmethod
    def from_file(cls, data: bytes, vocab_size: int, *, source: str = "tokenizer.bin") -> Llama2cTokenizer:
        return cls(*read_tokenizer_bin(data, vocab_size, source=source))

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    def _code_points(self, text: str) -> list[int]:
        """The ids before merging (after BOS and the dummy prefix); ValueError if a byte has no token."""
        ids: list[int] = []
        raw = text.encode("utf-8")
        i = 0
        while i < len(raw):
            # a code point: a lead byte and at most 3 continuation bytes (run.c stops at 4 bytes)
            j = i + 1
            while j < len(raw) and (raw[j] & 0xC0) == 0x80 and j - i < 4:
                j += 1
            piece = raw[i:j]
            if piece in self._ids:
                ids.append(self._ids[piece])
            else:
                ids.extend(b + 3 for b in piece)  # byte fallback: <0x00> is id 3
            i = j
        return ids

    def unknown_chars(self, text: str) -> list[str]:
        """Characters whose byte fallback ids fall outside the vocabulary (a vocabulary without byte tokens)."""
        bad = [c for c in dict.fromkeys(text) if any(i >= self.vocab_size for i in self._code_points(c))]
        return bad

    def encode(self, text: str, *, source: str = "the prompt") -> list[int]:
        unknown = self.unknown_chars(text)
        if unknown:
            raise UnknownCharactersError(unknown, source)
        ids = [BOS]
        if text:
            space = self._ids.get(b" ")
            if space is not None:  # run.c would push id -1 here; every sentencepiece vocabulary has " "
                ids.append(space)
        ids += self._code_points(text)
        while True:
            best_score, best_idx, best_id = -1e10, -1, -1
            for i in range(len(ids) - 1):
                merged = self._ids.get(self.pieces[ids[i]] + self.pieces[ids[i + 1]])
                if merged is not None and self.scores[merged] > best_score:
                    best_score, best_idx, best_id = self.scores[merged], i, merged
            if best_idx < 0:
                return ids
            ids[best_idx : best_idx + 2] = [best_id]

    def encode_tensor(self, text: str, *, source: str = "the prompt") -> torch.Tensor:
        return torch.tensor(self.encode(text, source=source), dtype=torch.long)

    def _piece(self, prev: int | None, token: int) -> bytes:
        """What run.c prints for ``token`` after ``prev`` (decode + safe_printf)."""
        if token == BOS:
            return b""
        piece = self.pieces[token]
        if prev == BOS and piece.startswith(b" "):
            piece = piece[1:]
        m = _BYTE_PIECE.fullmatch(piece)
        if m:
            piece = bytes([int(m.group(1), 16)])
        if len(piece) == 1 and not (0x20 <= piece[0] <= 0x7E or piece[0] in b" \t\n\v\f\r"):
            return b""
        return piece

    def decode(self, ids) -> str:
        ids = _ids_list(ids)
        if ids and not 0 <= min(ids) <= max(ids) < self.vocab_size:
            raise ValueError(f"token ids must be in [0, {self.vocab_size}), got {min(ids)}..{max(ids)}.")
        out = b"".join(self._piece(ids[i - 1] if i else None, t) for i, t in enumerate(ids))
        return out.decode("utf-8", errors="replace")

    def token_str(self, i: int) -> str:
        """The piece of token ``i`` with ␣/⏎/⇥ for whitespace; byte tokens keep their ``<0xXX>`` name."""
        text = self.pieces[i].decode("utf-8", errors="backslashreplace")
        return visible(text)

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, "scores": self.scores,
                           "pieces": [base64.b64encode(p).decode("ascii") for p in self.pieces]})

    @classmethod
    def from_json(cls, s: str) -> Llama2cTokenizer:
        d = json.loads(s)
        try:
            return cls([base64.b64decode(p) for p in d["pieces"]], d["scores"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"the llama2.c tokenizer JSON is damaged ({e}); re-import the model.") from None


# -- Hugging Face tokenizer.json ---------------------------------------------------------------------------
class HFTokenizer(LibraryTokenizer):
    """A Hugging Face ``tokenizer.json`` (GPT-2 byte-level BPE, Llama's sentencepiece BPE, ...).

    encode adds what the file's post-processor adds (e.g. Llama's BOS), as ``transformers`` does;
    decode drops special tokens so that decoding and re-encoding a prompt gives the same ids."""

    kind = "hf"

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str = "tokenizer.json") -> HFTokenizer:
        if len(data) > MAX_TOKENIZER_BYTES:
            raise TokenizerFileError(f"{source} is {len(data):,} bytes, too big for a tokenizer.json.")
        try:
            return cls(Tokenizer.from_str(data.decode("utf-8")))
        except Exception as e:  # UnicodeDecodeError, or tokenizers' own exception for a malformed file
            raise TokenizerFileError(f"{source} is not a Hugging Face tokenizer.json the tokenizers library can "
                                     f"read ({str(e)[:100]}).") from None

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def decode(self, ids) -> str:
        ids = [i for i in _ids_list(ids) if i < self.vocab_size]  # padded embedding rows have no text
        return self._tok.decode(ids, skip_special_tokens=True)

    def token_str(self, i: int) -> str:
        """The token's text with ␣/⏎/⇥ for whitespace (GPT-2's byte alphabet and sentencepiece's ▁ undone)."""
        tok = self._tok.id_to_token(i)
        if tok is None:
            return f"<unused {i}>"
        if all(c in _BYTE_DECODER for c in tok):  # byte-level BPE (GPT-2): map the stand-ins back to bytes
            tok = bytes(_BYTE_DECODER[c] for c in tok).decode("utf-8", errors="backslashreplace")
        else:
            tok = tok.replace("\u2581", " ")
        return visible(tok)

    @property
    def tokenizer(self) -> Tokenizer:
        return self._tok

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, "tokenizer": json.loads(self._tok.to_str())})

    @classmethod
    def from_json(cls, s: str) -> HFTokenizer:
        d = json.loads(s)
        try:
            return cls(Tokenizer.from_str(json.dumps(d["tokenizer"])))
        except Exception as e:
            raise ValueError(f"the Hugging Face tokenizer JSON is damaged ({str(e)[:100]}); "
                             "re-import the model.") from None
