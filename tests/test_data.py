import json

import pytest
import torch

from tinyviz.config import DataConfig
from tinyviz.data import corpora
from tinyviz.data import text as data
from tinyviz.data.text import (
    BPETokenizer,
    CharTokenizer,
    CorpusError,
    TokenData,
    UnknownCharactersError,
)

TRICKY = ["", "\n", "\n\n", "  ", " a  b ", "\ttab\there\n", "a\r\nb", "héllo wörld €5 日本語 😀", "Tovek!?\n\nkelomi"]


@pytest.fixture(scope="module")
def tales() -> str:
    return corpora.generate("tinytales", 100_000, seed=0)


@pytest.fixture(scope="module")
def bpe(tales) -> BPETokenizer:
    return BPETokenizer.train(tales, 400)


def test_char_tokenizer_round_trip_and_vocab(tales):
    tok = CharTokenizer.train(tales)
    assert tok.kind == "char"
    assert tok.chars == sorted(set(tales)) and tok.vocab_size == len(set(tales))
    ids = tok.encode(tales)
    assert ids[:3] == [tok.chars.index(c) for c in tales[:3]]
    assert tok.decode(ids) == tales
    assert tok.decode(torch.tensor(ids[:50])) == tales[:50]
    assert tok.encode("") == [] and tok.decode([]) == ""


def test_char_tokenizer_names_unknown_chars():
    tok = CharTokenizer(list("abc \n"))
    with pytest.raises(UnknownCharactersError) as err:
        tok.encode("aé€bé\x00")
    assert err.value.chars == ["é", "€", "\x00"]
    message = str(err.value)
    assert "'é'" in message and "'€' (U+20AC)" in message and "U+0000" in message
    assert "remove or replace" in message
    assert tok.unknown_chars("abc") == [] and tok.unknown_chars("xax") == ["x"]


def test_char_tokenizer_labels_and_json():
    tok = CharTokenizer(list("ab \n\t"))
    labels = {tok.token_str(i) for i in range(tok.vocab_size)}
    assert labels == {"a", "b", "␣", "⏎", "⇥"}
    again = data.tokenizer_from_json(tok.to_json())
    assert isinstance(again, CharTokenizer) and again.chars == tok.chars
    with pytest.raises(ValueError, match="token ids must be in"):
        tok.decode([tok.vocab_size])


@pytest.mark.parametrize("text", TRICKY)
def test_bpe_round_trip_is_exact(bpe, text):
    assert bpe.decode(bpe.encode(text)) == text


def test_bpe_vocab_json_and_determinism(tales, bpe):
    assert bpe.kind == "bpe" and 256 < bpe.vocab_size <= 400
    assert len(bpe.encode(tales)) < 0.7 * len(tales)  # merges compress (random copy strings barely do)
    assert bpe.unknown_chars("€ 日本") == []
    payload = bpe.to_json()
    assert json.loads(payload)["kind"] == "bpe"
    again = data.tokenizer_from_json(payload)
    assert isinstance(again, BPETokenizer)
    for text in TRICKY + [tales[:2000]]:
        assert again.encode(text) == bpe.encode(text)
    assert BPETokenizer.train(tales, 400).to_json() == payload
    with pytest.raises(ValueError, match="between 300 and 8192"):
        BPETokenizer.train(tales, 100)


def test_bpe_token_labels_are_readable(bpe):
    labels = [bpe.token_str(i) for i in range(bpe.vocab_size)]
    assert "⏎" in labels and "␣" in labels
    assert any(label.startswith("␣") and label[1:].isalpha() for label in labels)  # e.g. "␣the"
    assert not any("Ġ" in label or "Ċ" in label for label in labels)


@pytest.mark.parametrize("payload, words", [
    ("", "not valid JSON"),
    ("{", "not valid JSON"),
    ("[1, 2]", "'kind'"),
    ('{"kind": "wordpiece"}', "'kind'"),
    ('{"kind": "char"}', "'chars'"),
    ('{"kind": "bpe", "tokenizer": {"model": 3}}', "damaged"),
])
def test_tokenizer_from_json_rejects_bad_json(payload, words):
    with pytest.raises(ValueError, match=words):
        data.tokenizer_from_json(payload)


def test_build_tokenizer_follows_config(tales):
    assert isinstance(data.build_tokenizer(tales, DataConfig()), CharTokenizer)
    tok = data.build_tokenizer(tales, DataConfig(tokenizer="bpe", bpe_vocab_size=300))
    assert isinstance(tok, BPETokenizer) and tok.vocab_size <= 300


def test_load_text_accepts_utf8_variants(tmp_path):
    text = "Hello, wörld!\nSecond line.\n"
    cases = {
        "plain.txt": text.encode("utf-8"),
        "bom.txt": "\ufeff".encode("utf-8") + text.encode("utf-8"),
        "crlf.txt": text.replace("\n", "\r\n").encode("utf-8"),
        "utf16.txt": text.encode("utf-16"),  # with a byte-order mark
    }
    for name, raw in cases.items():
        (tmp_path / name).write_bytes(raw)
        assert data.load_text(tmp_path / name) == text, name


@pytest.mark.parametrize("raw, words", [
    (b"", ["empty"]),
    (b"  \n\t\n  ", ["only whitespace"]),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", ["PNG", "not text"]),
    (b"some text\x00\x00more text", ["NUL", "binary"]),
    ("caf\u00e9 cr\u00e8me br\u00fbl\u00e9e\n".encode("latin-1"), ["not UTF-8", "re-save it as UTF-8"]),
    (b"text with a bell \x07 in it", ["control characters", "U+0007", "line 1"]),
    (b"aaaaaaaa", ["one distinct character"]),
])
def test_load_text_refuses_bad_files(tmp_path, raw, words):
    path = tmp_path / "corpus.txt"
    path.write_bytes(raw)
    with pytest.raises(CorpusError) as err:
        data.load_text(path)
    for word in words:
        assert word in str(err.value)


def test_load_text_refuses_missing_folders_and_huge_files(tmp_path, monkeypatch):
    with pytest.raises(CorpusError, match="no file at .*; check the path"):
        data.load_text(tmp_path / "nope.txt")
    with pytest.raises(CorpusError, match="is a folder"):
        data.load_text(tmp_path)
    big = tmp_path / "big.txt"
    big.write_text("a b c " * 100)
    monkeypatch.setattr(data, "MAX_CORPUS_BYTES", 500)
    with pytest.raises(CorpusError, match=r"over the 0\.0005 MB limit"):
        data.load_text(big)


def test_validate_text_normalises_line_ends():
    assert data.validate_text("a\r\nb\rc", source="the upload") == "a\nb\nc"
    with pytest.raises(CorpusError, match="^the upload is empty"):
        data.validate_text("", source="the upload")


def test_load_corpus_builtin_path_and_unknown(tmp_path):
    assert data.load_corpus(DataConfig(corpus="copy", corpus_chars=1000, corpus_seed=2)) == corpora.generate(
        "copy", 1000, 2)
    path = tmp_path / "mine.txt"
    path.write_text("my own little corpus\n")
    assert data.load_corpus(DataConfig(corpus=str(path))) == "my own little corpus\n"
    with pytest.raises(CorpusError, match="unknown corpus 'tinytale'.*tinytales.*or a path to a .txt file"):
        data.load_corpus(DataConfig(corpus="tinytale"))
    with pytest.raises(CorpusError, match="no file at .*check the path.*tinytales"):
        data.load_corpus(DataConfig(corpus=str(tmp_path / "missing.txt")))


def test_token_data_splits_off_the_end_for_validation(tales):
    tok = CharTokenizer.train(tales)
    td = TokenData.from_text(tales, tok, 0.1)
    assert td.train.dtype == td.val.dtype == torch.int64
    assert len(td.train) + len(td.val) == len(tales)
    assert len(td.val) == round(0.1 * len(tales))
    assert tok.decode(td.val) == tales[-len(td.val):]


def test_get_batch_is_seeded_shifted_and_in_split():
    td = TokenData(torch.arange(1000), 0.2)
    x, y = td.get_batch("train", 8, 16, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(y, x + 1)  # ids are positions, so "shifted by one" is "plus one"
    assert int(y.max()) < 800
    x2, y2 = td.get_batch("train", 8, 16, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2) and torch.equal(y, y2)
    x3, _ = td.get_batch("train", 8, 16, torch.Generator().manual_seed(1))
    assert not torch.equal(x, x3)
    xv, yv = td.get_batch("val", 64, 16, torch.Generator().manual_seed(0))
    assert int(xv.min()) >= 800 and int(yv.max()) <= 999
    with pytest.raises(ValueError, match="'train' or 'val'"):
        td.get_batch("test", 8, 16, torch.Generator())


def test_get_batch_reaches_every_window():
    td = TokenData(torch.arange(20), 0.5)
    x, _ = td.get_batch("train", 500, 4, torch.Generator().manual_seed(0))
    assert set(x[:, 0].tolist()) == set(range(10 - 4))


def test_check_fits_says_how_many_tokens():
    td = TokenData(torch.arange(1000), 0.1)
    td.check_fits(99, 32)
    with pytest.raises(CorpusError, match=r"only 100 tokens for validation .* n_ctx \+ 1 = 101; use a longer"):
        td.check_fits(100, 32)
    with pytest.raises(CorpusError, match=r"only 900 tokens for training, but one example needs n_ctx \+ 1 = 1025"):
        td.check_fits(1024, 32)
    with pytest.raises(CorpusError, match="only 100 tokens for validation"):
        td.get_batch("val", 4, 128, torch.Generator())


def test_prepare_fits_a_tokenizer_and_sizes_the_vocabulary_or_keeps_a_given_one():
    from tinyviz.config import apply_overrides, preset

    cfg = apply_overrides(preset("micro"), ["corpus_chars=20000", "tokenizer=bpe", "bpe_vocab_size=300"])
    prep = data.prepare(cfg)
    assert prep.config.model.d_vocab == prep.tokenizer.vocab_size <= 300
    assert torch.equal(torch.cat([prep.data.train, prep.data.val]), prep.tokenizer.encode_tensor(prep.text))
    again = data.prepare(prep.config, prep.tokenizer)  # a run's own tokenizer: its config is kept as it is
    assert again.config == prep.config and torch.equal(again.data.train, prep.data.train)


def test_whitespace_is_shown_one_way_in_every_label():
    assert data.visible("a b\tc\n") == "a␣b⇥c⏎"
    assert data.visible("a b\tc\n", spaces=False) == "a b⇥c⏎"
    assert CharTokenizer.train("a \n").token_str(0) == "⏎"
