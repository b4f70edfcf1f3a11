import functools
import itertools
import re
from collections import Counter

import pytest

from tinyviz.data import corpora

GENERATED = [name for name in corpora.CORPORA if name != "pydoc"]
# A generated name: 2-3 consonant-vowel syllables, maybe a final consonant (no template word fits this).
NAME = re.compile(r"\b[BDFGJKLMNPRSTVZ][aeiou](?:[bdfgjklmnprstvz][aeiou]){1,2}[klmnrs]?\b")
PRONOUN_SETS = [{"he", "him", "his"}, {"she", "her"}, {"they", "them", "their"}]


@functools.cache
def gen(name: str, n_chars: int = 300_000, seed: int = 0) -> str:
    return corpora.generate(name, n_chars, seed)


def full_lines(text: str) -> list[str]:
    """The lines of ``text``, without a final line that the size limit cut short."""
    return text.split("\n")[:-1]


def is_balanced(s: str) -> bool:
    depth = 0
    for ch in s:
        depth += {"(": 1, ")": -1}[ch]
        if depth < 0:
            return False
    return depth == 0


def test_catalogue_descriptions_fit_one_line_and_builtins_are_recognised():
    # the app lists each corpus with its description in one select box row
    assert all(desc and "\n" not in desc for desc in corpora.CORPORA.values())
    assert all(corpora.is_builtin(name) for name in corpora.CORPORA)
    assert not corpora.is_builtin("nope") and not corpora.is_builtin("tinytales.txt")


@pytest.mark.parametrize("call", [corpora.generate, corpora.default_prompt])
def test_unknown_name_lists_builtins(call):
    with pytest.raises(ValueError, match=r"unknown corpus 'nope'; built-in corpora: tinytales, induction"):
        call("nope")


@pytest.mark.parametrize("name", GENERATED)
def test_deterministic_per_seed_and_different_across_seeds(name):
    assert corpora.generate(name, 20_000, seed=3) == corpora.generate(name, 20_000, seed=3)
    assert corpora.generate(name, 20_000, seed=3) != corpora.generate(name, 20_000, seed=4)


@pytest.mark.parametrize("name", list(corpora.CORPORA))
@pytest.mark.parametrize("n_chars", [3_000, 300_000])
def test_size_within_five_percent(name, n_chars):
    assert abs(len(gen(name, n_chars)) - n_chars) <= 0.05 * n_chars


@pytest.mark.parametrize("name", list(corpora.CORPORA))
def test_text_ends_with_a_whole_line(name):
    # no timing here: a wall-clock bound flakes on a busy machine (speed belongs in benchmarks)
    assert gen(name).endswith("\n")


def tinytales_lines(seed: int = 0):
    lines = full_lines(gen("tinytales", 300_000, seed))
    copies = [line for line in lines if re.fullmatch(r"[a-z]+( [a-z]+)+", line)]
    stories = [line for line in lines if line not in set(copies)]
    return stories, copies


def test_tinytales_charset_is_small():
    chars = set(gen("tinytales"))
    assert chars <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ \n.,!?'")
    assert 45 <= len(chars) <= 64


def test_tinytales_names_are_generated_not_listed():
    names = [set(NAME.findall(gen("tinytales", 300_000, seed))) for seed in (0, 1)]
    assert min(map(len, names)) > 1000
    assert len(names[0] & names[1]) / len(names[0] | names[1]) < 0.1


def test_tinytales_every_name_is_mentioned_three_times_close_together():
    stories, _ = tinytales_lines()
    assert len(stories) > 500
    tightest = []
    for story in stories:
        counts = Counter(NAME.findall(story))
        assert 1 <= len(counts) <= 2, story
        for name, count in counts.items():
            assert count >= 3, (name, story)
            starts = [m.start() for m in re.finditer(rf"\b{name}\b", story)]
            tightest.append(min(c - a for a, c in zip(starts, starts[2:])))
    assert sorted(tightest)[len(tightest) // 2] <= 120


def test_tinytales_pronouns_are_consistent_in_one_character_stories():
    stories, _ = tinytales_lines()
    solo = [s for s in stories if len(set(NAME.findall(s))) == 1]
    assert len(solo) > 100
    for story in solo:
        used = set(re.findall(r"\b(he|him|his|she|her|they|them|their)\b", story.lower()))
        assert any(used <= allowed for allowed in PRONOUN_SETS), story


def test_tinytales_copy_lines_have_varied_periods():
    stories, copies = tinytales_lines()
    # a quarter to a half of the characters: enough copying that induction pays off quickly
    share = sum(len(c) + 1 for c in copies) / (sum(len(c) + 1 for c in copies) + sum(len(s) + 1 for s in stories))
    assert 0.25 <= share <= 0.5
    words = [line.split(" ") for line in copies]
    assert all(len(set(w)) == 1 and 2 <= len(w) <= 4 for w in words)
    periods = Counter(len(w[0]) for w in words)
    assert set(periods) == set(range(3, 13))
    assert max(periods.values()) < 0.2 * len(copies)


def test_induction_lines_repeat_a_variable_length_word():
    lines = full_lines(gen("induction"))
    assert all(re.fullmatch(r"[a-z]+( [a-z]+)+", line) for line in lines)
    repeated = []
    for line in lines:
        words = Counter(line.split(" "))
        repeated += [w for w, n in words.items() if n >= 2 and len(w) >= 3]
    assert len(repeated) > 0.6 * len(lines)
    assert set(range(3, 17)) <= {len(w) for w in repeated}


@pytest.mark.parametrize("name, answer", [
    ("copy", lambda s: s),
    ("reverse", lambda s: s[::-1]),
    ("sort", lambda s: "".join(sorted(s))),
])
def test_string_tasks_have_correct_answers(name, answer):
    lines = full_lines(gen(name))
    assert len(lines) > 10_000
    for line in lines:
        question, _, given = line.partition("|")
        assert re.fullmatch(r"[a-z]{3,12}", question) and given == answer(question), line


def test_brackets_answers_are_correct_and_not_given_away_by_counts():
    lines = full_lines(gen("brackets"))
    balanced = equal_counts_but_unbalanced = 0
    for line in lines:
        brackets, _, answer = line.partition("=")
        assert answer == ("yes" if is_balanced(brackets) else "no"), line
        balanced += answer == "yes"
        if answer == "no" and brackets.count("(") == brackets.count(")"):
            equal_counts_but_unbalanced += 1
    assert 0.4 < balanced / len(lines) < 0.6
    assert equal_counts_but_unbalanced > 0.1 * len(lines)


def test_modadd_is_correct_and_holds_out_pairs_for_validation():
    text = gen("modadd")
    lines = full_lines(text)
    starts = [0, *itertools.accumulate(len(line) + 1 for line in lines)]
    pairs = []
    for line in lines:
        a, b, c = map(int, re.fullmatch(r"(\d+)\+(\d+)=(\d+)", line).groups())
        assert max(a, b, c) < corpora.MODULUS and c == (a + b) % corpora.MODULUS, line
        pairs.append((a, b))
    # The validation split (last 10 %) must hold pairs that training never showed; a line or two
    # of slack either side of the boundary, since the split cuts by tokens, not lines.
    boundary = 0.9 * len(text)
    seen = {p for p, start in zip(pairs, starts) if start < boundary - 20}
    held = {p for p, start in zip(pairs, starts) if start > boundary + 20}
    assert len(seen | held) > 0.99 * corpora.MODULUS ** 2  # only lines near the boundary may be missing
    assert len(held) > 3000
    assert not seen & held


def test_pydoc_is_ascii_prose():
    text = gen("pydoc", 10_000_000)
    assert len(text) > 400_000
    assert set(text) <= {chr(i) for i in range(32, 127)} | {"\n"}
    letters_and_spaces = sum(ch.isalpha() or ch == " " for ch in text)
    assert letters_and_spaces / len(text) > 0.75
    assert text.count(" the ") > 2000
    assert corpora.generate("pydoc", 10_000_000, seed=5) == text


@pytest.mark.parametrize("name", list(corpora.CORPORA))
def test_default_prompt_is_fixed_in_distribution_and_has_repeats(name):
    prompt = corpora.default_prompt(name)
    assert 60 <= len(prompt) <= 100  # the training session snapshots at most 100 tokens of the probe
    assert set(prompt) <= set(gen(name)), set(prompt) - set(gen(name))
    grams = Counter(prompt[i:i + 4] for i in range(len(prompt) - 3))
    assert max(grams.values()) >= 2


def test_tinytales_prompt_repeats_one_name_three_times():
    prompt = corpora.default_prompt("tinytales")
    (name, count), = Counter(NAME.findall(prompt)).items()
    assert count == 3
    assert re.search(r"\n([a-z]+)( \1){2}", prompt)
