"""Built-in corpora, generated here from templates and seeded randomness (never copied text).

Each corpus is chosen so that a known attention pattern solves it: ``tinytales`` rewards
previous-token and induction heads, ``copy``/``reverse``/``sort`` need a head that looks
back across the ``|``, ``brackets`` a uniform counting head, ``modadd`` is the grokking task.

``generate(name, n_chars, seed)`` is deterministic for its arguments and returns about
``n_chars`` characters (within 5 %), always whole lines when ``n_chars`` allows it.
"""

from __future__ import annotations

import functools
import random
import string
import unicodedata
from collections.abc import Callable

CORPORA: dict[str, str] = {
    "tinytales": "Short template stories with invented names, mixed with copy lines; induction heads form fast.",
    "induction": "Random letter strings repeated within a line among random filler; only induction solves it.",
    "copy": "A random string, '|', the same string again (abcde|abcde).",
    "reverse": "A random string, '|', the string reversed (abcde|edcba).",
    "sort": "A random string, '|', its letters sorted (dbeac|abcde).",
    "brackets": "Bracket strings and whether they balance ((()())=yes); the ideal head counts uniformly.",
    "modadd": "a+b=c modulo 97; the last 10 % uses held-out pairs, so validation shows grokking (slow).",
    "pydoc": "The English prose of Python's built-in help topics (pydoc_data), about 465k characters.",
}

MODULUS = 97
LETTERS = string.ascii_lowercase

_CONSONANTS = "bdfgjklmnprstvz"
_VOWELS = "aeiou"
_FINALS = "klmnrs"

_PRONOUNS = {"he": ("he", "him", "his"), "she": ("she", "her", "her"), "they": ("they", "them", "their")}
_KINDS = {"he": ["boy", "cat", "dog", "fox", "bear"], "she": ["girl", "cat", "bird", "rabbit", "frog"],
          "they": ["child", "robot", "bird", "fox", "frog"]}
_OBJECTS = ["ball", "kite", "hat", "book", "box", "cake", "drum", "boat", "key", "lamp", "shell", "stone"]
_PLACES = ["park", "garden", "forest", "river", "beach", "hill", "town", "barn", "school", "lake"]
_OBJECT_ADJS = ["red", "big", "small", "old", "shiny", "blue", "green", "soft", "new"]
_CHARACTER_ADJS = ["little", "kind", "brave", "shy", "happy", "curious", "clever", "sleepy"]
_FEELINGS = ["happy", "glad", "proud", "calm", "excited"]
_SAD = ["sad", "lonely", "upset"]

# Keys: {A}/{B} names; {a_he} {a_He} {a_him} {a_his} (and b_) pronouns; {obj} {obj2} {place}
# {oadj} {cadj} {kind} {bkind} {feel} {sad}. Stories are intro + one or two arcs + ending so that
# a line reads as a tiny plot rather than shuffled sentences.
_INTROS = [
    "Once upon a time, there was a {cadj} {kind} named {A}.",
    "There once was a {kind} called {A} who lived near the {place}.",
    "{A} was a {cadj} {kind}.",
    "One day, a {kind} named {A} went to the {place}.",
    "{A} lived in a small house by the {place}.",
]
_SOLO_ARCS = [
    ["{A} had a {oadj} {obj}.", "{a_He} loved the {obj} very much.",
     "Every day, {A} played with the {obj} in the {place}."],
    ["One morning, {A} lost {a_his} {obj} near the {place}.", "'Where is my {obj}?' asked {A}.",
     "{a_He} looked for it all day.", "At last, {A} found the {obj} under a {obj2}."],
    ["{A} walked to the {place} with {a_his} {obj}.", "The sun was warm, and {A} felt {feel}.",
     "{a_He} sang a song about the {obj}."],
    ["Then it began to rain.", "{A} hid the {obj} under {a_his} coat.", "'Stay dry, little {obj},' said {A}."],
]
_PAIR_ARCS = [
    ["At the {place}, {A} met a {bkind} named {B}.", "{B} wanted to play with the {obj} too.",
     "{A} gave the {obj} to {B}.", "'Thank you, {A}!' said {B}."],
    ["{B} was {sad} because {b_he} had no {obj}.", "{A} saw {B} and sat next to {b_him}.",
     "'You can share my {obj},' said {A}.", "{B} smiled and said, 'You are kind, {A}.'"],
    ["{B} said, 'Let us race to the {place}, {A}!'", "{A} and {B} ran as fast as they could.",
     "{B} won, but {A} did not mind."],
]
_ENDINGS = [
    "From that day on, {A} kept the {obj} safe.",
    "{A} was very {feel}.",
    "That night, {A} went to sleep with the {obj}.",
    "{A} never forgot that day at the {place}.",
    "The end.",
]
_PAIR_ENDINGS = ["{A} and {B} became good friends.", "{B} and {A} played until dark."]


def _name(rng: random.Random) -> str:
    """A pronounceable name of 2-3 consonant-vowel syllables, sometimes with a final consonant."""
    syllables = [rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(rng.randint(2, 3))]
    final = rng.choice(_FINALS) if rng.random() < 0.4 else ""
    return ("".join(syllables) + final).capitalize()


def _character(rng: random.Random, prefix: str) -> dict[str, str]:
    pronoun = rng.choice(list(_PRONOUNS))
    he, him, his = _PRONOUNS[pronoun]
    return {f"{prefix}_he": he, f"{prefix}_He": he.capitalize(), f"{prefix}_him": him, f"{prefix}_his": his,
            f"{prefix}_kind": rng.choice(_KINDS[pronoun])}


def _story(rng: random.Random) -> str:
    """One story on one line; every name in it appears at least three times."""
    a_name = _name(rng)
    b_name = _name(rng)
    # A name that is a prefix of the other would blur "mentioned three times" for both.
    while b_name.startswith(a_name) or a_name.startswith(b_name):
        b_name = _name(rng)
    slots = {"A": a_name, "B": b_name, **_character(rng, "a"), **_character(rng, "b")}
    obj, obj2 = rng.sample(_OBJECTS, 2)
    slots.update(obj=obj, obj2=obj2, place=rng.choice(_PLACES), oadj=rng.choice(_OBJECT_ADJS),
                 cadj=rng.choice(_CHARACTER_ADJS), feel=rng.choice(_FEELINGS), sad=rng.choice(_SAD),
                 kind=slots["a_kind"], bkind=slots["b_kind"])

    with_friend = rng.random() < 0.5
    arcs = [rng.choice(_SOLO_ARCS)]
    if with_friend:
        arcs.append(rng.choice(_PAIR_ARCS))
    elif rng.random() < 0.3:
        arcs.append(rng.choice([arc for arc in _SOLO_ARCS if arc is not arcs[0]]))
    endings = _ENDINGS + _PAIR_ENDINGS if with_friend else _ENDINGS
    templates = [rng.choice(_INTROS)] + [t for arc in arcs for t in arc] + [rng.choice(endings)]
    while sum(t.count("{A}") for t in templates) < 3:
        templates.insert(-1, rng.choice([t for t in _ENDINGS if "{A}" in t]))
    return " ".join(t.format(**slots) for t in templates) + "\n"


def _letters(rng: random.Random, low: int, high: int) -> str:
    return "".join(rng.choices(LETTERS, k=rng.randint(low, high)))


def _copy_line(rng: random.Random) -> str:
    """A random word of 3-12 letters repeated 2-4 times: the period varies so position cannot solve it."""
    return " ".join([_letters(rng, 3, 12)] * rng.randint(2, 4)) + "\n"


# Copy lines are short (~25 characters) and stories long (~300), so to make copying about a
# third of what the model reads, most lines are copy lines. Measured with 2 layers, d_model 64:
# at 5 % of the characters no induction head had formed after 1.6 k steps.
COPY_LINE_PROB = 0.85


def _tinytales_line(rng: random.Random) -> str:
    return _copy_line(rng) if rng.random() < COPY_LINE_PROB else _story(rng)


def _induction_line(rng: random.Random) -> str:
    if rng.random() < 0.2:  # some lines have no repeat, so a repeat is evidence, not a given
        return " ".join(_letters(rng, 1, 8) for _ in range(rng.randint(3, 7))) + "\n"
    pattern = _letters(rng, 3, 16)
    words = [pattern] * rng.randint(2, 4) + [_letters(rng, 1, 8) for _ in range(rng.randint(0, 3))]
    rng.shuffle(words)
    return " ".join(words) + "\n"


def _copy_task_line(rng: random.Random) -> str:
    s = _letters(rng, 3, 12)
    return f"{s}|{s}\n"


def _reverse_line(rng: random.Random) -> str:
    s = _letters(rng, 3, 12)
    return f"{s}|{s[::-1]}\n"


def _sort_line(rng: random.Random) -> str:
    s = _letters(rng, 3, 12)
    return f"{s}|{''.join(sorted(s))}\n"


def is_balanced(brackets: str) -> bool:
    """Whether a string of '(' and ')' is balanced."""
    depth = 0
    for ch in brackets:
        depth += 1 if ch == "(" else -1
        if depth < 0:
            return False
    return depth == 0


def _balanced(rng: random.Random, pairs: int) -> str:
    out, depth, opens_left = [], 0, pairs
    while opens_left or depth:
        if opens_left and (depth == 0 or rng.random() < 0.5):
            out.append("(")
            opens_left, depth = opens_left - 1, depth + 1
        else:
            out.append(")")
            depth -= 1
    return "".join(out)


def _brackets_line(rng: random.Random) -> str:
    s = _balanced(rng, rng.randint(1, 8))
    if rng.random() < 0.5:
        return f"{s}=yes\n"
    # Three ways to break it, so neither the length nor the count of '(' alone gives the answer.
    chars = list(s)
    how = rng.randrange(3)
    if how == 0:
        i = rng.randrange(len(chars))
        chars[i] = "(" if chars[i] == ")" else ")"
    elif how == 1:
        del chars[rng.randrange(len(chars))]
    else:
        while is_balanced("".join(chars)):
            rng.shuffle(chars)
    return "".join(chars) + "=no\n"


def _modadd_lines(rng: random.Random, n_chars: int) -> list[str]:
    """All a+b pairs shuffled; the last tenth of the text holds pairs never seen before it."""
    pairs = [f"{a}+{b}={(a + b) % MODULUS}\n" for a in range(MODULUS) for b in range(MODULUS)]
    rng.shuffle(pairs)
    tail_chars = n_chars // 10
    mean_len = sum(map(len, pairs)) / len(pairs)
    n_held = min(len(pairs) // 2, max(1, round(tail_chars / mean_len)))
    held, seen = pairs[:n_held], pairs[n_held:]
    lines: list[str] = []
    total = 0
    for pool, until in ((seen, n_chars - tail_chars), (held, n_chars)):
        while total < until:
            rng.shuffle(pool)
            for line in pool:
                lines.append(line)
                total += len(line)
                if total >= until:
                    break
    return lines


_ASCII_REPLACEMENTS = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u2026": "...",
                                     "\u2014": "--", "\u2013": "-", "\u00df": "ss", "\u00b0": " degrees", "\t": "    "})


@functools.lru_cache(maxsize=1)
def _pydoc_text() -> str:
    try:
        from pydoc_data.topics import topics
    except ImportError as e:  # some minimal Python builds leave pydoc_data out
        raise ValueError("the 'pydoc' corpus needs the pydoc_data module, which this Python lacks; "
                         "use another corpus.") from e
    text = "\n\n".join(topics[key] for key in sorted(topics)).translate(_ASCII_REPLACEMENTS)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return "".join(ch for ch in text if ch == "\n" or " " <= ch <= "~")


_LINE_MAKERS: dict[str, Callable[[random.Random], str]] = {
    "tinytales": _tinytales_line,
    "induction": _induction_line,
    "copy": _copy_task_line,
    "reverse": _reverse_line,
    "sort": _sort_line,
    "brackets": _brackets_line,
}


def is_builtin(name: str) -> bool:
    """Whether ``name`` is a built-in corpus."""
    return name in CORPORA


def _check_name(name: str) -> None:
    if not is_builtin(name):
        raise ValueError(f"unknown corpus {name!r}; built-in corpora: {', '.join(CORPORA)}.")


def _fit(text: str, n_chars: int) -> str:
    """Cut to ``n_chars``, then back to the last line end if that keeps 95 % of it."""
    text = text[:n_chars]
    end = text.rfind("\n") + 1
    return text[:end] if end >= 0.95 * n_chars else text


def generate(name: str, n_chars: int = 300_000, seed: int = 0) -> str:
    """The built-in corpus ``name``: about ``n_chars`` characters (within 5 %), deterministic per seed.

    ``pydoc`` is fixed text of about 465k characters: ``seed`` is ignored and ``n_chars`` only truncates.
    """
    _check_name(name)
    if n_chars < 1:
        raise ValueError(f"n_chars={n_chars} must be at least 1.")
    if name == "pydoc":
        return _fit(_pydoc_text(), n_chars)
    rng = random.Random(f"{name}:{seed}")  # the name in the seed keeps corpora independent of each other
    if name == "modadd":
        return _fit("".join(_modadd_lines(rng, n_chars)), n_chars)
    make_line = _LINE_MAKERS[name]
    lines: list[str] = []
    total = 0
    while total < n_chars:
        lines.append(make_line(rng))
        total += len(lines[-1])
    return _fit("".join(lines), n_chars)


_PROMPTS = {
    "tinytales": "Kelomi was a shy girl. Kelomi had a red ball. Kelomi was very happy.\nkelomi kelomi kelomi",
    "induction": "xqbtr mzk xqbtr xqbtr\nplowdfen ab plowdfen gh plowdfen\nuvwe sit uvwe\nzorbaqim zorbaqim",
    "copy": "kelomiv|kelomiv\nbqrt|bqrt\nzaxdepulm|zaxdepulm\nfigo|figo\nwentarsab|wentarsab\n",
    "reverse": "kelomiv|vimolek\nbqrt|trqb\nzaxdepulm|mlupedxaz\nkelomiv|vimolek\nfigo|ogif\nbqrt|trqb\n",
    "sort": "kelomiv|eiklmov\nbqrt|bqrt\nzaxdepulm|adelmpuxz\nfigo|fgio\nwentarsab|aabenrstw\n",
    "brackets": "(()())=yes\n(()=no\n(())()=yes\n())(=no\n((()))=yes\n)()(=no\n(()())=yes\n()=yes\n(()))=no\n",
    "modadd": "23+45=68\n50+60=13\n23+45=68\n96+1=0\n50+60=13\n7+7=14\n96+1=0\n12+34=46\n7+7=14\n",
    "pydoc": 'The "if" statement\n******************\n\nThe "if" statement is used for conditional execution:\n',
}


def default_prompt(name: str) -> str:
    """A fixed 60-100 character probe prompt in the style of corpus ``name``, with repeats in it.

    It uses only characters that the corpus itself uses, so any model trained on it can encode it.
    """
    _check_name(name)
    return _PROMPTS[name]
