"""Extraction: the final answer in a model response or a reference solution (step 1 of `grade`)."""

from __future__ import annotations

import bisect
import re

from score_jax.rewards.math._limits import MAX_LIST_ITEMS
from score_jax.rewards.math._text import CONNECTIVES, brace_pairs, clean_text, math_spans

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])")
_FINAL_ANSWER_RE = re.compile(r"final\s+answer\s*(?:is|:)\s*", re.IGNORECASE)
_HOPE_RE = re.compile(r"\.?\s*I hope it is correct", re.IGNORECASE)
_ANSWER_PHRASE_RE = re.compile(r"\banswer\s*(?:is\b\s*:?|:)\s*", re.IGNORECASE)
_NUMBER_RE = re.compile(r"(?<![A-Za-z_\d.,])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:[.,]\d+)?(?:/\d+)?(?:\s*\\?%)?")
_WORD_RE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}")


# Text between two boxes of one answer has at most this many words ("and", "for part (b)").
_MAX_BOX_GAP_WORDS = 4
_MAX_BOX_GAP_CHARS = 80
# "The answer is" phrases tried, from the last one back.
_MAX_PHRASES_TRIED = 5
# Only the tail of very long outputs is searched: the answer is at the end, and it bounds the work.
_MAX_SCAN_CHARS = 20000


def _boxes(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of every \\boxed{...}, \\fbox{...} and \\boxed X in `text`."""
    found = []
    pairs = brace_pairs(text) if "\\boxed" in text or "\\fbox" in text else {}
    for match in _BOX_RE.finditer(text):
        i = match.end()
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            close = pairs.get(i, -1)
            if close < 0:  # Unclosed box: the rest of the text is its content.
                found.append((match.start(), len(text), text[i + 1 :]))
            else:
                found.append((match.start(), close + 1, text[i + 1 : close]))
        elif i > match.end():
            arg = re.match(r"[^\s$]+", text[i:])
            if arg:
                found.append((match.start(), i + arg.end(), arg.group(0)))
    return found


def _box_gap_joins(gap: str) -> bool:
    """True when the text between two boxes is short enough that they form one answer."""
    if len(gap) > _MAX_BOX_GAP_CHARS or re.search(r"\.\s+[A-Z]|\n\s*\n", gap):
        return False
    gap = re.sub(r"\\(?:text|textbf|mathrm|mbox|textnormal)\s*\{([^{}]*)\}", r" \1 ", gap)
    gap = re.sub(r"\\[a-zA-Z]+", " ", gap)
    words = re.findall(r"[A-Za-z]+", gap)
    return not words or (len(words) <= _MAX_BOX_GAP_WORDS and any(w.lower() in CONNECTIVES for w in words))


def _last_box_group(text: str) -> tuple[int, str] | None:
    boxes = _boxes(text)
    if not boxes:
        return None
    group = [boxes[-1]]
    for box in reversed(boxes[:-1]):
        if len(group) >= MAX_LIST_ITEMS or box[1] > group[0][0] or not _box_gap_joins(text[box[1] : group[0][0]]):
            break  # nested or overlapping boxes, or a sentence between them
        group.insert(0, box)
    return group[0][0], ", ".join(content.strip() for _, _, content in group)


def _strip_math_delimiters(text: str) -> str:
    text = text.strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\[", "\\]"), ("\\(", "\\)")):
        if text.startswith(left) and text.endswith(right) and len(text) >= len(left) + len(right):
            inner = text[len(left) : len(text) - len(right)]
            if left not in ("$", "$$") or "$" not in inner.replace("\\$", ""):
                return inner.strip()
    return text


_QUOTES_RE = re.compile(r'(?:\s|\\?")+')
_QUOTES_REVERSED_RE = re.compile(r'(?:\s|"\\?)+')
_TRAILING_PUNCTUATION_REVERSED_RE = re.compile(r"[\s.,;:]+")


def _strip_end(text: str, reversed_pattern: re.Pattern) -> str:
    """`text` without the longest suffix whose reverse `reversed_pattern` matches: linear, where
    `re.sub("(...)+$")` tries every start of a long run and is quadratic."""
    match = reversed_pattern.match(text[::-1])
    return text[: len(text) - match.end()] if match else text


def _trim_answer(text: str) -> str:
    match = _QUOTES_RE.match(text)
    text = _strip_end(text[match.end() :] if match else text, _QUOTES_REVERSED_RE)
    text = _strip_math_delimiters(text)
    text = re.sub(r"(?<!\\)\$", " ", text)
    text = re.sub(r"\\[()\[\]]", " ", text)
    return _strip_end(text, _TRAILING_PUNCTUATION_REVERSED_RE).strip()


def _answer_from_sentence(sentence: str) -> str | None:
    """The answer in a sentence that follows "Final Answer:" or "The answer is"."""
    sentence = sentence.strip()
    spans = math_spans(sentence)
    if spans and spans[0][0] == 0:
        return _trim_answer(spans[0][2]) if spans[0][2] is not None else None
    box = _last_box_group(sentence)
    if box:
        return _trim_answer(box[1])
    end = re.search(r"\.(?!\d)|\n", sentence)
    if end:
        sentence = sentence[: end.start()]
    parts = re.split(r"\bis\b", sentence)
    if len(parts) > 1:
        sentence = parts[-1]
    sentence = sentence.strip()
    if _is_bare_answer(sentence):
        return _trim_answer(sentence)
    return _last_math_or_number(sentence)


def _final_answer_phrase(text: str) -> tuple[int, str] | None:
    """The paper's "Final Answer: The final answer is X. I hope it is correct." (last one)."""
    matches = list(_FINAL_ANSWER_RE.finditer(text))
    if not matches:
        return None
    match = matches[-1]
    rest = text[match.end() : match.end() + 2000]
    stated = re.match(r"the\s+final\s+answer\s+is\s*", rest, flags=re.IGNORECASE)
    if stated:
        rest = rest[stated.end() :]
    hope = _HOPE_RE.search(rest)
    if hope and (stated or match.group(0).rstrip().lower().endswith("is")):
        answer = _trim_answer(rest[: hope.start()])
        if answer:
            return match.start(), answer
    answer = _answer_from_sentence(rest[: hope.start()] if hope else rest)
    return (match.start(), answer) if answer else None


def _answer_phrase(text: str) -> str | None:
    """ "The answer is X" / "Answer: X" (last one)."""
    for match in reversed(list(_ANSWER_PHRASE_RE.finditer(text))[-_MAX_PHRASES_TRIED:]):
        answer = _answer_from_sentence(text[match.end() : match.end() + 1000])
        if answer:
            return answer
    return None


def _words_outside_math(text: str) -> list[str]:
    pieces, last = [], 0
    for start, end, _ in math_spans(text):
        pieces.append(text[last:start])
        last = end
    pieces.append(text[last:])
    outside = re.sub(r"\\[a-zA-Z]+", " ", " ".join(pieces))
    return _WORD_RE.findall(outside)


def _is_bare_answer(text: str) -> bool:
    """True for a short text that is itself an answer: "28 percent", "$1$ and $2$", "-\\frac{1}{2}"."""
    text = text.strip()
    if not text or len(text) > 120 or re.search(r"(?<!\\)[:?!]\s|\.\.|\.\s+[A-Za-z]", text):
        return False  # a sentence (but `10,\\! 000` is a number)
    spans = math_spans(text)
    words = [w for w in _words_outside_math(text) if w.lower() not in CONNECTIVES]
    if not spans:
        if "$" in text.replace("\\$", ""):
            return False
        if re.match(r"[\d.+\-\\({\[|]", text):
            return len(words) <= 2
        return not words or len(words) <= 1 and len(text) <= 30  # a formula, or a word or two
    before = text[: spans[0][0]]
    return not _WORD_RE.search(before) and len(words) <= 2


def _last_math_or_number(text: str) -> str | None:
    """The last clean inline math span or the last number, whichever ends later."""
    best_end, best = -1, None
    spans = []
    for start, end, content in math_spans(text):
        if content is None:  # malformed inline math: neither an answer nor a source of numbers
            spans.append((start, end))
            continue
        content = content.strip()
        if content and len(_WORD_RE.findall(re.sub(r"\\[a-zA-Z]+\s*(\{[^{}]*\})?", " ", content))) < 2:
            best_end, best = end, content
            spans.append((start, end))
    starts = [start for start, _ in spans]  # left to right, not overlapping
    for match in _NUMBER_RE.finditer(text):
        k = bisect.bisect_right(starts, match.start()) - 1
        inside = k >= 0 and match.start() < spans[k][1]
        if match.end() > best_end and not inside:
            best_end, best = match.end(), match.group(0)
    return _trim_answer(best) if best else None


def extract_answer(text: str) -> str | None:
    """The final answer in a model response or a reference solution, or None if none is given.

    Args:
      text: model output or reference (bare answer, `$...$`, `\\boxed{}` or a full solution).

    Returns:
      The answer as written (LaTeX, delimiters stripped), e.g. "\\frac{1}{2}" for
      "... so the answer is $\\boxed{\\frac{1}{2}}$.", or None.
    """
    if not text or not text.strip():
        return None
    text = clean_text(text[-_MAX_SCAN_CHARS:])
    phrase = _final_answer_phrase(text)
    box = _last_box_group(text)
    if phrase or box:
        _, answer = max(c for c in (phrase, box) if c is not None)  # the later one
        answer = _trim_answer(answer)
        if answer:
            return answer
    answer = _answer_phrase(text)
    if answer:
        return answer
    if _is_bare_answer(text):
        return _trim_answer(text) or None
    return _last_math_or_number(text)
