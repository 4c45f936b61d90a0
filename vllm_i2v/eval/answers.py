"""Judge-free answer scores: normalized exact match (the open-ended QA convention: case, punctuation, articles
and number words do not count), token F1 (SQuAD's, over the normalized words), and the option a multiple-choice
answer picked."""

from __future__ import annotations

import re
from collections import Counter

NUMBER_WORDS = {
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
ARTICLES = {"a", "an", "the"}


def normalize_answer(text: str) -> str:
    """Lower case, punctuation dropped, articles dropped, number words as digits, single spaces."""
    words = re.sub(r"[^\w\s]", " ", text.lower()).split()
    return " ".join(NUMBER_WORDS.get(word, word) for word in words if word not in ARTICLES)


def exact_match(prediction: str, reference: str) -> bool:
    """Whether ``prediction`` equals ``reference`` after :func:`normalize_answer`."""
    return normalize_answer(prediction) == normalize_answer(reference)


def token_f1(prediction: str, reference: str) -> float:
    """Harmonic mean of word precision and recall between the normalized ``prediction`` and ``reference``."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def extract_choice(prediction: str, options: str) -> str | None:
    """The option letter a multiple-choice answer picked (``options``: one ``(A) text`` per line), or None.

    Read in order: a leading letter ("B", "(B)", "B.", "B) the cat"), a parenthesized letter anywhere ("the answer
    is (C)"), "option C" / "answer: C", else the one option whose text the answer contains."""
    letters = re.findall(r"^\(([A-Z])\)", options, re.MULTILINE)
    text = prediction.strip()
    for pattern in (r"^\(?([A-Z])\)?(?:[.:)\s]|$)", r"\(([A-Z])\)", r"\b(?:option|answer)(?: is)?:?\s*\(?([A-Z])\b"):
        found = re.search(pattern, text, re.IGNORECASE if "option" in pattern else 0)
        if found and found.group(1).upper() in letters:
            return found.group(1).upper()
    texts = {
        m.group(1): normalize_answer(m.group(2)) for m in re.finditer(r"^\(([A-Z])\) (.*)$", options, re.MULTILINE)
    }
    said = normalize_answer(text)
    hits = [letter for letter, option in texts.items() if option and option in said]
    return hits[0] if len(hits) == 1 else None
