"""MATH answer grading: pull the final answer out of model text and decide if it equals the reference.

The reward r(y, y*) of SCoRe on MATH is 1.0 when the final answer of y matches the reference
answer y*, else 0.0. This module is that reward.

Pipeline
--------
``grade(response, gold)``
  1. ``extract_answer`` on the response and on the gold (a gold may be a bare answer, ``$...$``,
     ``\\boxed{...}`` or a full solution). In order:
       a. the paper's "Final Answer: The final answer is X. I hope it is correct." or the last
          ``\\boxed{}``/``\\fbox{}`` (balanced braces; ``\\boxed 5``), whichever comes later. Boxes
          separated by punctuation or a few words with a connective (", ", "and", "for part (b)
          and") form one list answer;
       b. "the answer is X" / "Answer: X";
       c. a text that is itself an answer ("28 percent", "$1$ and $2$", "\\frac{10}{9}");
       d. the last inline math span or number, whichever comes later.
  2. ``is_equivalent(pred, gold)``:
       a. normalise both strings: double escaping, ``\\left``/``\\right``, spacing commands,
          ``\\dfrac``/``\\tfrac``, ``\\text{}`` wrappers, degrees, dollars, percent words,
          thousands separators, mixed numbers, trailing punctuation; equal strings are equal;
       b. parse both with a small LaTeX parser into a tree of tuples: exact rational literals
          that remember their decimal places, symbols, functions, ``\\pm``, lists, tuples, sets,
          intervals, unions, matrices, ratios, percent, relation chains. Trailing unit words
          ("cm", "\\text{ miles}") are dropped;
       c. compare the trees. Lists and sets are unordered, tuples and matrices ordered, a
          labelled answer ``x = 3``/``(p, q) = (1, 2)``/``f(x) = 1`` also reads as its right
          side, equations match up to a constant factor and inequalities up to a positive one,
          inequalities and intervals meet as sets of reals. Scalars: exact rationals where the
          whole tree is rational; a decimal with at least two places matches an exact value it
          rounds from; otherwise both sides are evaluated at the same pseudo-random points
          with 50-digit mpmath (probabilistic identity testing: fast, and it decides
          ``sec^2 y = tan^2 y + 1`` without sympy.simplify);
       d. sympy only where the evaluator cannot decide: turning an inequality such as
          ``1 <= |z| <= 3/2`` into a set, and ``parse_latex`` (ANTLR) for LaTeX the small
          parser rejects.
     Cheap guards come first (input length, nesting depth, exponent and factorial size, list
     length); then every symbolic step runs under a hard per-call time limit that raises in
     the calling thread, main or not. Any exception, guard trip or timeout means "not
     equivalent".
``grade_batch(responses, golds)`` runs ``grade`` in a lazily started pool of spawned worker
processes. A worker that dies, or stays silent on one item past a deadline, is killed and
replaced; its item is retried once on the fresh worker and scores 0.0 if that fails too.
Results keep the input order.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import itertools
import math
import multiprocessing
import multiprocessing.connection
import os
import re
import threading
import time
import zlib
from collections.abc import Sequence
from fractions import Fraction
from typing import NamedTuple

import mpmath

# Answers longer than this (after extraction) are compared as strings only.
_MAX_ANSWER_CHARS = 1000
# Answers nested deeper than this (brackets; twice this in parser recursion) are compared as
# strings only.
_MAX_NESTING = 40
# Hard limit on the symbolic part of one is_equivalent call, in seconds.
_SYMBOLIC_TIMEOUT_S = 2.0
# A pool worker silent for this long on one item is killed and replaced, in seconds.
_WORKER_TIMEOUT_S = 10.0
# A new pool worker must have imported sympy and be ready within this many seconds.
_WORKER_START_TIMEOUT_S = 120.0
# Lists (and groups of boxes) longer than this are compared as strings only.
_MAX_LIST_ITEMS = 64
# parse_latex, the fallback for what the small parser rejects, only sees answers this short.
_MAX_SYMPY_PARSE_CHARS = 200
# Largest |exponent| the evaluators accept, and largest n for n!.
_MAX_EXPONENT = 10**6
_MAX_EXACT_EXPONENT = 2000
_MAX_FACTORIAL = 10**5
# Working precision (decimal digits) and relative tolerance for numeric identity tests.
_DPS = 50
_REL_TOL = mpmath.mpf(10) ** -25
# A decimal with at least this many places matches an exact value it correctly rounds.
_MIN_ROUNDING_PLACES = 2
# Random points per identity test.
_TRIALS = 3


# --------------------------------------------------------------------------------------------
# Time limit: raise _Timeout in the calling thread after a deadline.
# --------------------------------------------------------------------------------------------


class _Timeout(BaseException):
    """Raised in a thread whose symbolic time ran out.

    A BaseException so that sympy's own ``except Exception`` blocks cannot swallow it.
    """


_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)
_set_async_exc.restype = ctypes.c_int


class _Watchdog:
    """One daemon thread per process that raises _Timeout in threads past their deadline.

    SIGALRM only reaches the main thread; an asynchronous exception reaches any thread, between
    two bytecodes. Neither interrupts one long C call, which is why the guards in the parser
    and evaluators keep every single operation small.
    """

    def __init__(self):
        self._cond = threading.Condition()
        self._armed: dict[int, tuple[float, int]] = {}
        self._fired: set[int] = set()
        self._tokens = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float) -> int:
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="math-grader-watchdog", daemon=True)
                self._thread.start()
            token = next(self._tokens)
            self._armed[token] = (time.monotonic() + seconds, threading.get_ident())
            self._cond.notify()
            return token

    def disarm(self, token: int) -> None:
        with self._cond:
            self._armed.pop(token, None)
            if token in self._fired:
                self._fired.discard(token)
                # Drop a _Timeout that was set but not raised yet (a NULL exception clears it).
                _set_async_exc(threading.get_ident(), ctypes.py_object())

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for token, (deadline, thread_id) in list(self._armed.items()):
                    if deadline <= now:
                        del self._armed[token]
                        self._fired.add(token)
                        _set_async_exc(thread_id, ctypes.py_object(_Timeout))
                next_deadline = min((d for d, _ in self._armed.values()), default=now + 60.0)
                self._cond.wait(timeout=max(next_deadline - now, 0.001))


_WATCHDOG = _Watchdog()


@contextlib.contextmanager
def _time_limit(seconds: float):
    """Raises _Timeout inside the with-block once `seconds` have passed."""
    token = _WATCHDOG.arm(seconds)
    try:
        yield
    finally:
        _WATCHDOG.disarm(token)


# --------------------------------------------------------------------------------------------
# Text clean-up shared by extraction and normalisation.
# --------------------------------------------------------------------------------------------

# Commands whose backslash was escaped twice (JSON-in-JSON, Python reprs): `\\frac` -> `\frac`.
# Only names that cannot follow a real LaTeX line break `\\` in an answer.
_DOUBLE_ESCAPED_RE = re.compile(
    r"(?<!\\)\\\\(?=(?:frac|dfrac|tfrac|cfrac|sqrt|left|right|le|leq|ge|geq|lt|gt|ne|neq|boxed|fbox"
    r"|pi|cdot|times|div|pm|mp|infty|in|cup|cap|text|textbf|mathrm|mbox|circ|quad|qquad|dots|cdots"
    r"|ldots|sin|cos|tan|log|ln|alpha|beta|gamma|theta|approx|mathbf|overrightarrow)(?![a-zA-Z]))"
)
_ONE_BACKSLASH = "\\\\"  # re replacement string for one backslash
_SPECIAL_TOKEN_RE = re.compile(r"<\|[A-Za-z0-9_]{1,40}\|>")


def _clean_text(text: str) -> str:
    """Model-output clean-up: reasoning block, chat special tokens, double escaping."""
    _, sep, tail = text.rpartition("</think>")
    if sep and tail.strip():
        text = tail
    match = _SPECIAL_TOKEN_RE.search(text)
    while match and not text[: match.start()].strip():
        text = text[match.end() :]
        match = _SPECIAL_TOKEN_RE.search(text)
    if match:
        text = text[: match.start()]
    return _DOUBLE_ESCAPED_RE.sub(_ONE_BACKSLASH, text)


def _brace_pairs(text: str) -> dict[int, int]:
    """Index of each `{` -> index of its `}` (escaped braces skipped), in one linear pass."""
    pairs, stack = {}, []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            stack.append(i)
        elif ch == "}" and stack:
            pairs[stack.pop()] = i
        i += 1
    return pairs


def _find_unescaped(text: str, needle: str, start: int) -> int:
    while True:
        j = text.find(needle, start)
        if j <= 0 or text[j - 1] != "\\":
            return j
        start = j + 1


def _math_spans(text: str) -> list[tuple[int, int, str | None]]:
    """(start, end, content) of $$...$$, $...$, \\[...\\] and \\(...\\) spans, left to right.

    Inline math ($...$, \\(...\\)) does not cross a line break: a span that does is
    malformed and comes back with content None, so no answer is read from inside it
    (display math, $$...$$ and \\[...\\], may span lines).

    A hand-written scan rather than a regex: lazy regexes go quadratic on text full of
    unclosed delimiters, and a single regex call cannot be interrupted by the time limit.
    """
    spans = []
    unclosed: set[str] = set()  # delimiters with no closer left in the text
    i = 0
    while i < len(text):
        if text.startswith("\\[", i) or text.startswith("\\(", i):
            closer = "\\]" if text[i + 1] == "[" else "\\)"
            j = -1 if closer in unclosed else text.find(closer, i + 2)
            if j < 0:
                unclosed.add(closer)
            elif j > i + 2:
                content = text[i + 2 : j]
                spans.append((i, j + 2, None if closer == "\\)" and "\n" in content else content))
                i = j + 2
                continue
            i += 2
            continue
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == "$":
            delimiter = "$$" if text.startswith("$$", i) else "$"
            j = -1 if delimiter in unclosed else _find_unescaped(text, delimiter, i + len(delimiter) + 1)
            if j < 0:
                unclosed.add(delimiter)
                i += len(delimiter)
                continue
            content = text[i + len(delimiter) : j]
            spans.append((i, j + len(delimiter), None if delimiter == "$" and "\n" in content else content))
            i = j + len(delimiter)
            continue
        i += 1
    return spans


# --------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])")
_FINAL_ANSWER_RE = re.compile(r"final\s+answer\s*(?:is|:)\s*", re.IGNORECASE)
_HOPE_RE = re.compile(r"\.?\s*I hope it is correct", re.IGNORECASE)
_ANSWER_PHRASE_RE = re.compile(r"\banswer\s*(?:is\b\s*:?|:)\s*", re.IGNORECASE)
_NUMBER_RE = re.compile(r"(?<![A-Za-z_\d.,])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:[.,]\d+)?(?:/\d+)?(?:\s*\\?%)?")
_WORD_RE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}")
_CONNECTIVES = {"and", "or"}
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
    pairs = _brace_pairs(text) if "\\boxed" in text or "\\fbox" in text else {}
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
    return not words or (len(words) <= _MAX_BOX_GAP_WORDS and any(w.lower() in _CONNECTIVES for w in words))


def _last_box_group(text: str) -> tuple[int, str] | None:
    boxes = _boxes(text)
    if not boxes:
        return None
    group = [boxes[-1]]
    for box in reversed(boxes[:-1]):
        if len(group) >= _MAX_LIST_ITEMS or box[1] > group[0][0] or not _box_gap_joins(text[box[1] : group[0][0]]):
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


def _trim_answer(text: str) -> str:
    text = re.sub(r'^(?:\s|\\?")+|(?:\s|\\?")+$', "", text)
    text = _strip_math_delimiters(text)
    text = re.sub(r"(?<!\\)\$", " ", text)
    text = re.sub(r"\\[()\[\]]", " ", text)
    return re.sub(r"[\s.,;:]+$", "", text).strip()


def _answer_from_sentence(sentence: str) -> str | None:
    """The answer in a sentence that follows "Final Answer:" or "The answer is"."""
    sentence = sentence.strip()
    spans = _math_spans(sentence)
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
    """"The answer is X" / "Answer: X" (last one)."""
    for match in reversed(list(_ANSWER_PHRASE_RE.finditer(text))[-_MAX_PHRASES_TRIED:]):
        answer = _answer_from_sentence(text[match.end() : match.end() + 1000])
        if answer:
            return answer
    return None


def _words_outside_math(text: str) -> list[str]:
    pieces, last = [], 0
    for start, end, _ in _math_spans(text):
        pieces.append(text[last:start])
        last = end
    pieces.append(text[last:])
    outside = re.sub(r"\\[a-zA-Z]+", " ", " ".join(pieces))
    return _WORD_RE.findall(outside)


def _is_bare_answer(text: str) -> bool:
    """True for a short text that is itself an answer: "28 percent", "$1$ and $2$", "-\\frac{1}{2}"."""
    text = text.strip()
    if not text or len(text) > 120 or re.search(r"[:?!]\s|\.\.|\.\s+[A-Za-z]", text):
        return False
    spans = _math_spans(text)
    words = [w for w in _words_outside_math(text) if w.lower() not in _CONNECTIVES]
    if not spans:
        if "$" in text.replace("\\$", ""):
            return False
        if re.match(r"[\d.+\-\\({\[|]", text):
            return len(words) <= 2
        return len(words) <= 1 and len(text) <= 30
    before = text[: spans[0][0]]
    return not _WORD_RE.search(before) and len(words) <= 2


def _last_math_or_number(text: str) -> str | None:
    """The last clean inline math span or the last number, whichever ends later."""
    best_end, best = -1, None
    spans = []
    for start, end, content in _math_spans(text):
        if content is None:  # malformed inline math: neither an answer nor a source of numbers
            spans.append((start, end))
            continue
        content = content.strip()
        if content and len(_WORD_RE.findall(re.sub(r"\\[a-zA-Z]+\s*(\{[^{}]*\})?", " ", content))) < 2:
            best_end, best = end, content
            spans.append((start, end))
    for match in _NUMBER_RE.finditer(text):
        inside = any(start <= match.start() < end for start, end in spans)
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
    text = _clean_text(text[-_MAX_SCAN_CHARS:])
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


# --------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------

_UNICODE = {
    "\u2212": "-", "\u2013": "-", "\u00d7": r"\times ", "\u00f7": r"\div ", "\u00b7": r"\cdot ",
    "\u2264": r"\le ", "\u2265": r"\ge ", "\u2260": r"\ne ", "\u2248": r"\approx ", "\u221e": r"\infty ",
    "\u03c0": r"\pi ", "\u221a": r"\sqrt ", "\u00b2": "^2", "\u00b3": "^3", "\u00b0": "", "\u2208": r"\in ",
    "\u222a": r"\cup ", "\u2229": r"\cap ", "\u00b1": r"\pm ", "\u2205": r"\emptyset ", "\u20ac": "",
    "\u00a3": "", "\u00a0": " ",
}
_UNICODE_RE = re.compile("|".join(map(re.escape, _UNICODE)))
_TEXT_CMD_RE = re.compile(
    r"\\(?:text|textbf|textit|textrm|textnormal|textsf|texttt|mathrm|mathbf|mathit|mathsf|mathtt"
    r"|mathbb|mathcal|mbox|hbox|operatorname\*?|boldsymbol|bm)\s*\{([^{}]*)\}"
)
_SIZING_RE = re.compile(
    r"\\(?:left|right|bigl|bigr|Bigl|Bigr|biggl|biggr|bigg|Bigg|big|Big|middle)(?:\s*[.](?![0-9]))?(?![a-zA-Z])"
    r"|\\(?:displaystyle|textstyle|scriptstyle|limits|nolimits)(?![a-zA-Z])"
)
_DEGREE_RE = re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|\\degree|\^\s*\{\s*\}")
_THOUSANDS_RE = re.compile(r"(?<![\d.,])([1-9]\d{0,2})((?:,\d{3})+)(?![\d,])")
_SPACE_THOUSANDS_RE = re.compile(r"\s*[-+]?\d{1,3}(?: \d{3})+(?:\.\d+)?\s*")
_ROW_BREAK = "\x00"
_REPEATING_DECIMAL_RE = re.compile(r"(\d*)\.(\d{0,20})\\overline\s*\{(\d{1,20})\}")
_MIXED_NUMBER_RE = re.compile(r"(?<![\d.^_{a-zA-Z\\])(\d+)\s*\\frac\s*\{(\d+)\}\s*\{(\d+)\}")


def _repeating_decimal(match: re.Match) -> str:
    """0.1\\overline{6} -> (\\frac{15}{90})."""
    whole, fixed, repeat = match.group(1) or "0", match.group(2), match.group(3)
    num = int(whole + fixed + repeat) - int(whole + fixed)
    return f"(\\frac{{{num}}}{{{10 ** len(fixed) * (10 ** len(repeat) - 1)}}})"


@functools.lru_cache(maxsize=8192)
def _normalize(s: str) -> str:
    """Canonical LaTeX string of an extracted answer (see the module docstring, step 2a)."""
    s = _DOUBLE_ESCAPED_RE.sub(_ONE_BACKSLASH, s)
    s = re.sub(r"\\n(?![a-zA-Z])", " ", s)  # literal "\n" of double-escaped text
    s = s.replace("\\\\", _ROW_BREAK)  # keep matrix row breaks `\\` out of the rules below
    s = _UNICODE_RE.sub(lambda m: _UNICODE[m.group(0)], s)
    s = re.sub(r"\s+", " ", s)
    s = re.sub(r",\\!\s*(?=\d)", ",", s)  # MATH's thousands separator: 10,\!000
    s = re.sub(r"(\d)\s*\{\s*,\s*\}\s*(?=\d)", r"\1,", s)  # 14{,}916
    s = _SIZING_RE.sub("", s)
    s = re.sub(r"\\q?quad|\\[,;: ]|~", " ", s)
    s = s.replace("\\!", "")
    s = re.sub(r"\\[dtc]frac(?![a-zA-Z])", r"\\frac", s)
    s = re.sub(r"\\[dt]binom(?![a-zA-Z])", r"\\binom", s)
    s = re.sub(r"\\(?:le|ge)qslant(?![a-zA-Z])", lambda m: m.group(0)[:3] + "q", s)
    s = _DEGREE_RE.sub("", s)
    for _ in range(2):  # \text{...} may nest once: \text{\textbf{A}}
        s = _TEXT_CMD_RE.sub(lambda m: " " + m.group(1).strip() + " ", s)
    s = re.sub(r"\\?%|\b(?:percentage|percent|pct)\b", r" \\% ", s)
    s = re.sub(r"\\\$|\$", " ", s)
    groups = list(_THOUSANDS_RE.finditer(s))
    if len(groups) == 1 and s.count(",") == groups[0].group(2).count(","):
        start, end = groups[0].span()
        if _nesting_depth(s[:start], final=True) == 0:  # "7,425,000" is a number, "(12,102)" a pair
            s = s[:start] + s[start:end].replace(",", "") + s[end:]
    if _SPACE_THOUSANDS_RE.fullmatch(s):
        s = s.replace(" ", "")
    s = re.sub(r"(?<=[\d)\]}])(and|or)(?=[A-Z(\[{\\])", r" \1 ", s)  # "x=1orx=-1"
    s = _REPEATING_DECIMAL_RE.sub(_repeating_decimal, s)
    s = _MIXED_NUMBER_RE.sub(r"(\1+\\frac{\2}{\3})", s)
    s = re.sub(r"\s+", " ", s).strip()
    s = re.sub(r"(?:\s|\\|(?<!\.)\.(?!\d)|,|;)+$", "", s.replace(_ROW_BREAK, "\\\\ "))
    s = re.sub(r"^(?:is|are|be)\s+|^(?:[:=]|\\approx)\s*", "", s)
    return s.strip()


def _compact(s: str) -> str:
    """String key for the fast path: spaces dropped, `{x}` around one character dropped."""
    s = s.replace(" ", "")
    return re.sub(r"(?<=[\^_])\{(\w)\}|(?<=\\frac)\{(\w)\}\{(\w)\}", lambda m: "".join(g for g in m.groups() if g), s)


# --------------------------------------------------------------------------------------------
# Tokenizer and parser: LaTeX answer -> tree of tuples
# --------------------------------------------------------------------------------------------
#
# Node kinds (first tuple element):
#   ("num", Fraction, places)  literal; `places` = decimal places written (0 for integers)
#   ("sym", name)  ("const", "pi"|"e"|"i"|"inf")
#   ("add", terms)  ("mul", factors)  ("neg", x)  ("div", a, b)  ("pow", a, b)
#   ("call", name, args)  known function or an unknown one such as f(x)
#   ("idx", name, subscript)  a_{n+1}: a function of its subscript
#   ("pm", a | None, b)  a \pm b
#   ("pct", x)  ("ratio", parts)  ("sum", "sum"|"prod", var, lo, hi, body)
#   ("list", items)  top-level comma/"and" list     ("set", items)  ("tuple", items)
#   ("interval", lo, hi, left_open, right_open)  ("union", parts)  ("setop", op, a, b)
#   ("matrix", rows)  ("rel", ops, parts)  relation chain a op b op c


class _ParseError(Exception):
    pass


class _EvalError(Exception):
    pass


_TOKEN_RE = re.compile(
    r"\s*(?:(?P<num>\d+\.\d+|\.\d+|\d+)|(?P<cmd>\\(?:[a-zA-Z]+|[^a-zA-Z\s]))|(?P<word>[a-zA-Z]+)"
    r"|(?P<op><=|>=|!=|\S))"
)
_RELOPS = {
    "=": "=", "<": "<", ">": ">", "<=": "<=", ">=": ">=", "!=": "!=", r"\le": "<=", r"\leq": "<=",
    r"\ge": ">=", r"\geq": ">=", r"\lt": "<", r"\gt": ">", r"\ne": "!=", r"\neq": "!=",
    r"\approx": "~", r"\in": "in", r"\equiv": "=", r"\Rightarrow": "=", r"\implies": "=",
    r"\to": "=", r"\rightarrow": "=",
}
_FLIPPED = {"<": ">", ">": "<", "<=": ">=", ">=": "<=", "=": "=", "!=": "!="}
_FUNCS = {
    "sin", "cos", "tan", "sec", "csc", "cot", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh",
    "exp", "ln", "log", "lg", "arcsec", "arccsc", "arccot", "sgn", "det",
}
_WORD_FUNCS = _FUNCS | {"sqrt", "gcd", "lcm", "max", "min", "abs", "floor", "ceil"}
_CMD_FUNCS = _FUNCS | {"gcd", "max", "min"}
_FUNCTION_LETTERS = set("fghFGHPQW")
_WORD_CONSTS = {"pi": ("const", "pi"), "infty": ("const", "inf"), "inf": ("const", "inf"), "infinity": ("const", "inf")}
_DECORATIONS = {
    "overline", "vec", "hat", "bar", "widehat", "overrightarrow", "overleftrightarrow", "underline",
    "tilde", "dot", "ddot", "widetilde", "overarc", "stackrel",
}
_CLOSING_CMDS = {r"\}", r"\rfloor", r"\rceil", r"\rvert", r"\rVert", r"\end", r"\\", r"\right"}
_MUL_CMDS = {r"\cdot", r"\times", r"\ast", r"\star"}
_SET_OPS = {r"\cup": "union", r"\cap": "inter", r"\setminus": "minus", r"\backslash": "minus"}
_ONE = ("num", Fraction(1), 0)


def _tokenize(s: str) -> list[tuple[str, str, bool]]:
    toks, pos = [], 0
    while pos < len(s):
        match = _TOKEN_RE.match(s, pos)
        if not match or match.end() == pos:
            break
        kind = match.lastgroup
        toks.append((kind, match.group(kind), match.start(kind) > pos))
        pos = match.end()
    return toks


def _num(text: str) -> tuple:
    places = len(text.split(".")[1]) if "." in text else 0
    return ("num", Fraction(text), places)


def _mul(a, b) -> tuple:
    fa = a[1] if a[0] == "mul" else (a,)
    fb = b[1] if b[0] == "mul" else (b,)
    return ("mul", fa + fb)


def _nested(method):
    """Counts recursion through `method`; past _MAX_NESTING levels the parse fails.

    Bracket counting misses `-----x` or `\\sqrt\\sqrt\\sqrt x`; this bounds every path, so the
    evaluators never see a tree deep enough to approach the interpreter's stack.
    """

    @functools.wraps(method)
    def wrapped(self, *args):
        self.depth += 1
        try:
            if self.depth > 2 * _MAX_NESTING:
                raise _ParseError("answer nested too deeply")
            return method(self, *args)
        finally:
            self.depth -= 1

    return wrapped


class _Parser:
    """Recursive-descent parser for one normalised answer string."""

    def __init__(self, s: str):
        self.toks = _tokenize(s)
        self.i = 0
        self.abs_depth = 0
        self.depth = 0

    # -- token helpers ------------------------------------------------------------------------
    def peek(self, k: int = 0) -> tuple[str, str, bool]:
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else ("end", "", False)

    def take(self) -> tuple[str, str, bool]:
        tok = self.peek()
        self.i += 1
        return tok

    def at(self, text: str) -> bool:
        tok = self.peek()
        return tok[0] in ("op", "cmd") and tok[1] == text

    def accept(self, text: str) -> bool:
        if self.at(text):
            self.i += 1
            return True
        return False

    def expect(self, text: str) -> None:
        if not self.accept(text):
            raise _ParseError(f"expected {text!r} at token {self.i}: {self.peek()!r}")

    def split_first_char(self) -> tuple[str, str, bool]:
        """Takes one character of a multi-character number or word (LaTeX: `\\frac12`, `x^23`)."""
        kind, text, space = self.take()
        if kind in ("num", "word") and len(text) > 1 and not (kind == "num" and text[0] == "."):
            self.i -= 1
            self.toks[self.i] = (kind, text[1:], False)
            return kind, text[0], space
        return kind, text, space

    def is_sep(self, tok) -> bool:
        return tok[0] == "word" and tok[1].lower() in _CONNECTIVES

    def relop(self, tok) -> str | None:
        if tok[0] == "op" and tok[1] in _RELOPS:
            return _RELOPS[tok[1]]
        if tok[0] == "cmd" and tok[1] in _RELOPS:
            return _RELOPS[tok[1]]
        return None

    def starts_primary(self, tok) -> bool:
        kind, text, _ = tok
        if kind == "num":
            return True
        if kind == "word":
            return not self.is_sep(tok)
        if kind == "op":
            return text in "([{" or (text == "|" and self.abs_depth == 0)
        if kind == "cmd":
            return not (
                text in _RELOPS or text in _CLOSING_CMDS or text in _MUL_CMDS or text in _SET_OPS
                or text in (r"\pm", r"\mp", r"\%", r"\div", "\\&", r"\mid", r"\colon")
            )
        return False

    # -- grammar ------------------------------------------------------------------------------
    def parse_answer(self) -> tuple:
        groups: list[list[tuple]] = [[]]
        while self.peek()[0] != "end":
            tok = self.peek()
            if tok[1] == "," and tok[0] == "op":
                self.i += 1
                continue
            if (tok[0] == "op" and tok[1] == ";") or self.is_sep(tok):
                self.i += 1
                groups.append([])
                continue
            groups[-1].append(self.parse_relation())
            if self.peek()[0] != "end" and not (self.at(",") or self.at(";") or self.is_sep(self.peek())):
                raise _ParseError(f"unexpected token {self.peek()!r}")
        groups = [g for g in groups if g]
        if not groups:
            raise _ParseError("empty answer")
        if len(groups) > 1 and any(len(g) > 1 for g in groups) and all(
            len(g) == 1 or all(_labelled_value(e) is not None for e in g) for g in groups
        ):
            # "p = 5, q = 2; p = 7, q = 2": each group of labelled values is one tuple.
            items = [g[0] if len(g) == 1 else ("tuple", tuple(_labelled_value(e) for e in g)) for g in groups]
        else:
            items = [e for g in groups for e in g]
        if len(items) > _MAX_LIST_ITEMS:
            raise _ParseError("list too long")
        return items[0] if len(items) == 1 else ("list", tuple(items))

    def parse_seq(self, closers: set[str]) -> list[tuple]:
        items = []
        while not (self.peek()[1] in closers and self.peek()[0] in ("op", "cmd")):
            if self.peek()[0] == "end":
                raise _ParseError("unclosed bracket")
            if self.accept(",") or self.accept(";"):
                continue
            items.append(self.parse_relation())
            if not (self.at(",") or self.at(";") or (self.peek()[1] in closers)):
                raise _ParseError(f"unexpected token {self.peek()!r} in brackets")
        return items

    def parse_relation(self) -> tuple:
        parts = [self.parse_setexpr()]
        ops = []
        while (op := self.relop(self.peek())) is not None:
            self.i += 1
            ops.append(op)
            parts.append(self.parse_setexpr())
        if not ops:
            return parts[0]
        return _relation(ops, parts)

    def parse_setexpr(self) -> tuple:
        node = self.parse_ratio()
        while self.peek()[0] == "cmd" and self.peek()[1] in _SET_OPS:
            op = _SET_OPS[self.take()[1]]
            rhs = self.parse_ratio()
            if op == "union":
                left = node[1] if node[0] == "union" else (node,)
                node = ("union", left + (rhs,))
            else:
                node = ("setop", op, node, rhs)
        return node

    def parse_ratio(self) -> tuple:
        parts = [self.parse_additive()]
        while self.at(":") or self.at(r"\colon"):
            self.i += 1
            parts.append(self.parse_additive())
        return parts[0] if len(parts) == 1 else ("ratio", tuple(parts))

    def parse_additive(self) -> tuple:
        node = self.parse_signed()
        terms = [node]
        while True:
            if self.accept("+"):
                terms.append(self.parse_signed())
            elif self.accept("-"):
                terms.append(("neg", self.parse_signed()))
            elif self.accept(r"\pm") or self.accept(r"\mp"):
                left = terms[0] if len(terms) == 1 else ("add", tuple(terms))
                terms = [("pm", left, self.parse_signed())]
            else:
                break
        return terms[0] if len(terms) == 1 else ("add", tuple(terms))

    @_nested
    def parse_signed(self) -> tuple:
        if self.accept("-"):
            return ("neg", self.parse_signed())
        if self.accept("+"):
            return self.parse_signed()
        if self.accept(r"\pm") or self.accept(r"\mp"):
            return ("pm", None, self.parse_signed())
        return self.parse_term()

    def parse_term(self) -> tuple:
        node = self.parse_postfix()
        while True:
            tok = self.peek()
            if tok[0] in ("op", "cmd") and (tok[1] == "*" or tok[1] in _MUL_CMDS):
                self.i += 1
                node = _mul(node, self.parse_signed_factor())
            elif tok[0] in ("op", "cmd") and tok[1] in ("/", r"\div"):
                self.i += 1
                node = ("div", node, self.parse_signed_factor())
            elif tok[0] == "word" and self.at_unit():
                self.skip_unit()
            elif self.starts_primary(tok):
                node = _mul(node, self.parse_postfix())
            else:
                return node

    @_nested
    def parse_signed_factor(self) -> tuple:
        if self.accept("-"):
            return ("neg", self.parse_signed_factor())
        if self.accept("+"):
            return self.parse_signed_factor()
        return self.parse_postfix()

    def at_unit(self) -> bool:
        """A space-separated word after a value that ends the element: a unit ("5 cm^2")."""
        j = self.i
        tok = self.toks[j]
        if not tok[2] or len(tok[1]) < 2 or self.is_sep(tok) or tok[1].lower() in _WORD_CONSTS or tok[1] in _WORD_FUNCS:
            return False
        while j < len(self.toks) and self.toks[j][0] == "word" and not self.is_sep(self.toks[j]):
            j += 1
        if j < len(self.toks) and self.toks[j][1] == "^":
            j += 2
            if j - 1 < len(self.toks) and self.toks[j - 1][1] == "{":
                j += 2
        if j >= len(self.toks):
            return True
        kind, text, _ = self.toks[j]
        if self.is_sep(self.toks[j]):
            return True
        return kind in ("op", "cmd") and (text in ",;)]}" or text in _RELOPS or text == r"\%")

    def skip_unit(self) -> None:
        while self.peek()[0] == "word" and not self.is_sep(self.peek()):
            self.i += 1
        if self.accept("^"):
            self.parse_script()

    def parse_postfix(self) -> tuple:
        node = self.parse_primary()
        while True:
            if self.accept("^"):
                node = ("pow", node, self.parse_script())
            elif self.at("!") and self.peek(1)[1] != "=":
                self.i += 1
                node = ("call", "fact", (node,))
            elif self.at("'") and node[0] == "sym":
                self.i += 1
                node = ("sym", node[1] + "'")
            elif self.accept(r"\%"):
                node = ("pct", node)
            else:
                return node

    @_nested
    def parse_script(self) -> tuple:
        """Argument of ^ or _: like a command's argument, or a negated one (x^-1)."""
        if self.accept("-"):
            return ("neg", self.parse_script())
        return self.parse_arg()

    def parse_arg(self) -> tuple:
        """Argument of \\frac, \\sqrt, ...: a braced group or one character / command."""
        if self.accept("{"):
            node = self.parse_group_body("}")
            self.expect("}")
            return node
        kind, text, _ = self.split_first_char()
        if kind == "num":
            return _num(text)
        if kind == "word":
            return _word_node(text)
        if kind == "cmd":
            self.i -= 1
            return self.parse_primary()
        raise _ParseError(f"bad argument {text!r}")

    def parse_group_body(self, closer: str) -> tuple:
        items = self.parse_seq({closer})
        if not items:
            raise _ParseError("empty group")
        return items[0] if len(items) == 1 else ("set", tuple(items))

    def parse_subscript_name(self, name: str) -> tuple:
        """`x_1`, `a_{37}` -> symbol names; `F_{n-k}`, `a_i` -> ("idx", ...)."""
        if self.accept("{"):
            start = self.i
            sub = self.parse_group_body("}")
            raw = "".join(t[1] for t in self.toks[start : self.i])
            self.expect("}")
        else:
            kind, raw, _ = self.split_first_char()
            sub = _num(raw) if kind == "num" else _word_node(raw) if kind == "word" else None
            if sub is None:
                raise _ParseError("bad subscript")
        if sub[0] == "num" and sub[2] == 0:
            return ("sym", f"{name}_{sub[1]}")
        return ("idx", name, sub)

    @_nested
    def parse_primary(self) -> tuple:
        kind, text, _ = self.take()
        if kind == "num":
            if self.at("_"):  # base notation: 204_5
                self.i += 1
                sub = self.parse_script()
                return ("sym", f"{text}_{_key(sub)}")
            return _num(text)
        if kind == "word":
            return self.parse_word(text)
        if kind == "op":
            if text == "(":
                return self.parse_bracket("(")
            if text == "[":
                return self.parse_bracket("[")
            if text == "{":
                node = self.parse_group_body("}")
                self.expect("}")
                return node
            if text == "|" and self.abs_depth == 0:
                self.abs_depth += 1
                inner = self.parse_additive()
                self.abs_depth -= 1
                self.expect("|")
                return ("call", "abs", (inner,))
        if kind == "cmd":
            return self.parse_command(text)
        raise _ParseError(f"unexpected {text!r}")

    def parse_word(self, word: str) -> tuple:
        low = word.lower()
        if low in _WORD_CONSTS:
            return _WORD_CONSTS[low]
        if word in _WORD_FUNCS and self.at("("):
            self.i += 1
            args = self.parse_seq({")"})
            self.expect(")")
            return ("call", word, tuple(args))
        factors = [_letter(c) for c in word[:-1]]
        last = word[-1]
        node = _letter(last)
        if self.at("_"):
            self.i += 1
            node = self.parse_subscript_name(last)
        if self.at("'"):
            self.i += 1
            node = ("sym", _key(node) + "'") if node[0] != "sym" else ("sym", node[1] + "'")
        if self.at("(") and not self.peek()[2] and (last in _FUNCTION_LETTERS or node[1].endswith("'")):
            self.i += 1
            args = self.parse_seq({")"})
            self.expect(")")
            node = ("call", _key(node), tuple(args))
        for factor in reversed(factors):
            node = _mul(factor, node)
        return node

    def parse_bracket(self, opener: str) -> tuple:
        items = self.parse_seq({")", "]"})
        closer = self.take()[1]
        if not items:
            return ("tuple", ())
        if opener == "(" and closer == ")":
            return items[0] if len(items) == 1 else ("tuple", tuple(items))
        if len(items) == 2:
            return ("interval", items[0], items[1], opener == "(", closer == ")")
        if opener == "[" and closer == "]":
            return items[0] if len(items) == 1 else ("tuple", tuple(items))
        raise _ParseError("bad interval")

    def parse_command(self, cmd: str) -> tuple:
        name = cmd[1:]
        if name == "frac" or name == "over":
            return ("div", self.parse_arg(), self.parse_arg())
        if name == "sqrt":
            if self.accept("["):
                index = self.parse_additive()
                self.expect("]")
                return ("call", "root", (self.parse_arg(), index))
            return ("call", "sqrt", (self.parse_arg(),))
        if name in ("pi", "varpi"):
            return ("const", "pi")
        if name == "infty":
            return ("const", "inf")
        if name in ("imath", "jmath"):
            return ("const", "i")
        if name in ("emptyset", "varnothing"):
            return ("set", ())
        if name in ("boxed", "fbox"):
            return self.parse_arg()
        if name == "binom":
            return ("call", "binom", (self.parse_arg(), self.parse_arg()))
        if name == "{":
            items = self.parse_seq({r"\}"})
            self.expect(r"\}")
            return ("set", tuple(items))
        if name in ("lfloor", "lceil"):
            inner = self.parse_additive()
            self.expect(r"\rfloor" if name == "lfloor" else r"\rceil")
            return ("call", "floor" if name == "lfloor" else "ceil", (inner,))
        if name in ("lvert", "vert", "|", "lVert", "Vert"):
            inner = self.parse_additive()
            if not (self.accept(r"\rvert") or self.accept(r"\vert") or self.accept(r"\|")
                    or self.accept(r"\rVert") or self.accept(r"\Vert")):
                raise _ParseError("unclosed |")
            return ("call", "abs", (inner,))
        if name == "begin":
            return self.parse_environment()
        if name in ("sum", "prod"):
            return self.parse_big_operator(name)
        if name in _CMD_FUNCS or name in ("ln", "log"):
            return self.parse_function(name)
        if name in ("dots", "cdots", "ldots", "vdots"):
            return ("sym", "...")
        if name in _DECORATIONS:
            return ("sym", f"{name}{{{_key(self.parse_arg())}}}")
        if re.fullmatch(r"[a-zA-Z]+", name):
            if self.at("{"):  # an unknown command with an argument: a function of it
                self.i += 1
                args = self.parse_seq({"}"})
                self.expect("}")
                return ("call", name, tuple(args))
            node = ("sym", "\\" + name)
            if self.at("_"):
                self.i += 1
                node = self.parse_subscript_name("\\" + name)
            return node
        raise _ParseError(f"unexpected command {cmd!r}")

    def parse_function(self, name: str) -> tuple:
        power = None
        base = None
        for _ in range(2):
            if self.accept("^"):
                power = self.parse_script()
            elif self.accept("_"):
                base = self.parse_script()
        if self.at("("):
            self.i += 1
            args = self.parse_seq({")"})
            self.expect(")")
        else:
            args = [self.parse_function_argument()]
        if name == "lg":
            name, base = "log", ("num", Fraction(10), 0)
        if name in ("log", "ln") and base is not None:
            args = [args[0], base]
        node = ("call", name, tuple(args))
        if power is not None:
            if power == ("neg", _ONE) and name in ("sin", "cos", "tan"):
                return ("call", "arc" + name, tuple(args))
            node = ("pow", node, power)
        return node

    def parse_function_argument(self) -> tuple:
        """`\\sin 2x` -> 2x; stops before the next function (`\\sin b \\cos a`) or operator."""
        node = self.parse_postfix()
        while self.starts_primary(self.peek()) and not (
            self.peek()[0] == "cmd" and self.peek()[1][1:] in _CMD_FUNCS | {"ln", "log", "frac", "sqrt"}
        ):
            node = _mul(node, self.parse_postfix())
        return node

    def parse_big_operator(self, kind: str) -> tuple:
        var = lo = hi = None
        for _ in range(2):
            if self.accept("_"):
                low = self.parse_script()
                if low[0] == "rel" and low[1] == ("=",) and low[2][0][0] == "sym":
                    var, lo = low[2][0][1], low[2][1]
                else:
                    raise _ParseError("unsupported sum bounds")
            elif self.accept("^"):
                hi = self.parse_script()
        if var is None or hi is None:
            raise _ParseError("sum needs bounds")
        return ("sum", kind, var, lo, hi, self.parse_term())

    def parse_environment(self) -> tuple:
        env = self.read_braced_name()
        if env in ("array", "tabular") and self.at("{"):
            self.read_braced_name()
        if env not in ("pmatrix", "bmatrix", "matrix", "vmatrix", "Bmatrix", "smallmatrix", "array"):
            raise _ParseError(f"unsupported environment {env}")
        rows, row = [], []
        while True:
            if self.at(r"\end"):
                self.i += 1
                self.read_braced_name()
                break
            if self.peek()[0] == "end":
                raise _ParseError("unclosed environment")
            if self.accept("&"):
                continue
            if self.accept("\\\\"):
                if row:
                    rows.append(tuple(row))
                row = []
                continue
            if self.peek()[1] in (r"\hline",):
                self.i += 1
                continue
            row.append(self.parse_relation())
        if row:
            rows.append(tuple(row))
        if not rows or len({len(r) for r in rows}) != 1:
            raise _ParseError("ragged matrix")
        node = ("matrix", tuple(rows))
        return ("call", "det", (node,)) if env == "vmatrix" else node

    def read_braced_name(self) -> str:
        self.expect("{")
        name = ""
        while not self.at("}"):
            if self.peek()[0] == "end":
                raise _ParseError("unclosed name")
            name += self.take()[1]
        self.i += 1
        return name


def _letter(c: str) -> tuple:
    if c == "e":
        return ("const", "e")
    if c == "i":
        return ("const", "i")
    return ("sym", c)


def _word_node(word: str) -> tuple:
    node = _letter(word[-1])
    for c in reversed(word[:-1]):
        node = _mul(_letter(c), node)
    return node


def _key(node) -> str:
    """A short stable string for a subtree, used to name symbols built from it."""
    if node[0] == "num":
        return str(node[1])
    if node[0] in ("sym", "const"):
        return node[1]
    return repr(node)


def _relation(ops: list[str], parts: list[tuple]) -> tuple:
    """Builds ("rel", ops, parts); `a \\approx b` keeps the exact side (`x \\approx 3` keeps 3)."""
    if "~" in ops:
        k = ops.index("~")
        if k == 0 and _is_label(parts[0]) and len(parts) == 2:
            return parts[1]
        ops, parts = ops[:k], parts[: k + 1]
        if not ops:
            return parts[0]
    return ("rel", tuple(ops), tuple(parts))


def _is_label(node) -> bool:
    """A name rather than a value: x, a_{37}, f(x), (p, q), |AB|, A:B, \\frac{NO}{BO}."""
    kind = node[0]
    if kind in ("sym", "idx"):
        return True
    if kind == "call" and node[1] == "abs":
        return _is_label(node[2][0])
    if kind == "call":
        return node[1] not in _WORD_FUNCS and all(_is_label(a) for a in node[2])
    if kind in ("mul", "tuple", "ratio"):
        return all(_is_label(a) for a in node[1])
    if kind == "div":
        return _is_label(node[1]) and _is_label(node[2])
    return False


def _labelled_value(node) -> tuple | None:
    """The right side of `label = value` (or `label \\in S`), else None."""
    if node[0] == "rel" and len(node[1]) == 1 and node[1][0] in ("=", "in") and _is_label(node[2][0]):
        return node[2][1]
    return None


def _nesting_depth(s: str, final: bool = False) -> int:
    """Deepest bracket nesting in `s`, or with `final` the depth still open at its end."""
    depth = best = 0
    for ch in s:
        if ch in "([{":
            depth += 1
            best = max(best, depth)
        elif ch in ")]}":
            depth -= 1
    return depth if final else best


@functools.lru_cache(maxsize=8192)
def _parse(s: str) -> tuple | None:
    """Tree of a normalised answer, or None when the small parser does not understand it."""
    if len(s) > _MAX_ANSWER_CHARS or _nesting_depth(s) > _MAX_NESTING:
        return None
    parser = _Parser(s)
    try:
        return parser.parse_answer()
    except (_ParseError, RecursionError, ValueError, ZeroDivisionError, IndexError):
        return None


class _Answer(NamedTuple):
    tree: tuple
    textual: bool  # words such as "Evelyn" or "odd": compared as strings, not as o*d*d


@functools.lru_cache(maxsize=8192)
def _parse_answer(s: str) -> _Answer | None:
    tree = _parse(s)
    if tree is None:
        return None
    words = [w for w in re.findall(r"(?<![\\a-zA-Z])[a-zA-Z]{3,}", s) if w.lower() not in _KNOWN_WORDS]
    return _Answer(tree, bool(words) and _has_word_product(tree))


_KNOWN_WORDS = _WORD_FUNCS | set(_WORD_CONSTS) | _CONNECTIVES


def _has_word_product(node) -> bool:
    """True if a run of 3+ plain letters became a product of symbols ("odd" -> o*d*d)."""
    if not isinstance(node, tuple):
        return False
    if node and node[0] == "idx":
        return False
    if node and node[0] == "rel" and _is_label(node[2][0]):
        return any(_has_word_product(part) for part in node[2][1:])
    if node and node[0] == "mul":
        letters = 0
        for factor in node[1]:
            letters = letters + 1 if factor[0] in ("sym", "const") and len(factor[1]) == 1 else 0
            if letters >= 3:
                return True
    return any(_has_word_product(child) for child in node if isinstance(child, tuple))


# --------------------------------------------------------------------------------------------
# Exact and numeric evaluation
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8192)
def _exact(node) -> Fraction | None:
    """Exact value of a tree of rationals, + - * /, small integer powers, n! and square roots of squares."""
    kind = node[0]
    if kind == "num":
        return node[1]
    if kind == "neg":
        value = _exact(node[1])
        return None if value is None else -value
    if kind in ("add", "mul"):
        total = Fraction(0) if kind == "add" else Fraction(1)
        for child in node[1]:
            value = _exact(child)
            if value is None:
                return None
            total = total + value if kind == "add" else total * value
        return total
    if kind == "div":
        num, den = _exact(node[1]), _exact(node[2])
        return None if num is None or not den else num / den
    if kind == "pct":
        value = _exact(node[1])
        return None if value is None else value / 100
    if kind == "pow":
        base, exponent = _exact(node[1]), _exact(node[2])
        if base is None or exponent is None or exponent.denominator != 1 or abs(exponent) > _MAX_EXACT_EXPONENT:
            return None
        if base == 0 and exponent < 0:
            return None
        size = max(base.numerator.bit_length(), base.denominator.bit_length())
        if size * abs(exponent) > 100_000:
            return None
        return base ** int(exponent)
    if kind == "call" and len(node[2]) == 1:
        value = _exact(node[2][0])
        if value is None:
            return None
        if node[1] == "abs":
            return abs(value)
        if node[1] == "sqrt" and value >= 0:
            num, den = math.isqrt(value.numerator), math.isqrt(value.denominator)
            if num * num == value.numerator and den * den == value.denominator:
                return Fraction(num, den)
        if node[1] == "fact" and value.denominator == 1 and 0 <= value <= 1000:
            return Fraction(math.factorial(int(value)))
    return None


def _places(node) -> int | None:
    """Decimal places of a bare literal (`-0.33` -> 2, `5` -> 0), None for anything else."""
    if node[0] == "neg":
        node = node[1]
    return node[2] if node[0] == "num" else None


_LOCAL = threading.local()


def _ctx():
    """This thread's mpmath context (mpmath's global `mp` precision is not thread-safe)."""
    ctx = getattr(_LOCAL, "ctx", None)
    if ctx is None:
        ctx = type(mpmath.mp)()
        ctx.dps = _DPS
        _LOCAL.ctx = ctx
    return ctx


def _seed(*parts: object) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode())


def _symbol_value(ctx, name: str, trial: int):
    """A pseudo-random real in +-[0.35, 2.85], the same for a name and trial in every process."""
    seed = _seed(name, trial)
    value = ctx.mpf(35 + seed % 250) / 100
    return -value if (seed >> 16) & 1 else value


def _unknown_function(ctx, name: str):
    """A fixed pseudo-random analytic function standing for an unknown f(x) or a_{n}."""
    seed = _seed("function", name)
    a = ctx.mpf(30 + seed % 97) / 100
    b = ctx.mpf((seed >> 8) % 89) / 100
    c = ctx.mpf(50 + (seed >> 16) % 83) / 100

    def function(*args):
        return a + sum((k + 1) * (c * ctx.sin(a * v + b) + v * 37 / 100) for k, v in enumerate(args))

    return function


def _symbols(node, names: set, integer_names: set) -> None:
    """Collects free symbol names; those in sum bounds are integers."""
    kind = node[0]
    if kind == "sym":
        names.add(node[1])
        return
    if kind == "sum":
        _symbols(node[3], integer_names, integer_names)
        _symbols(node[4], integer_names, integer_names)
        _symbols(node[5], names, integer_names)
        return
    for child in node[1:]:
        if isinstance(child, tuple) and child and isinstance(child[0], str):
            _symbols(child, names, integer_names)
        elif isinstance(child, tuple):
            for item in child:
                if isinstance(item, tuple) and item and isinstance(item[0], str):
                    _symbols(item, names, integer_names)
                elif isinstance(item, tuple):  # matrix rows
                    for cell in item:
                        _symbols(cell, names, integer_names)


class _Matrix(tuple):
    """Rows of evaluated entries."""


def _is_real(ctx, value) -> bool:
    return not isinstance(value, _Matrix) and ctx.im(value) == 0


class _Evaluator:
    """Evaluates a scalar (or matrix) tree at one assignment of its free symbols."""

    def __init__(self, ctx, env: dict):
        self.ctx = ctx
        self.env = env

    def ev(self, node):
        ctx = self.ctx
        kind = node[0]
        if kind == "num":
            return ctx.mpf(node[1].numerator) / node[1].denominator
        if kind == "sym":
            return self.env[node[1]]
        if kind == "const":
            return {"pi": ctx.pi, "e": ctx.e, "i": ctx.mpc(0, 1), "inf": ctx.inf}[node[1]]
        if kind == "add":
            total = self.ev(node[1][0])
            for term in node[1][1:]:
                total = self.add(total, self.ev(term))
            return total
        if kind == "neg":
            value = self.ev(node[1])
            return _Matrix(tuple(-x for x in row) for row in value) if isinstance(value, _Matrix) else -value
        if kind == "mul":
            total = self.ev(node[1][0])
            for factor in node[1][1:]:
                total = self.mul(total, self.ev(factor))
            return total
        if kind == "div":
            num, den = self.ev(node[1]), self.ev(node[2])
            if isinstance(den, _Matrix) or den == 0:
                raise _EvalError("division by zero or by a matrix")
            return self.mul(num, 1 / den)
        if kind == "pow":
            return self.power(node)
        if kind == "pct":
            return self.ev(node[1]) / 100
        if kind == "call":
            return self.call(node[1], node[2])
        if kind == "idx":
            return _unknown_function(ctx, "idx:" + node[1])(self.ev(node[2]))
        if kind == "matrix":
            return _Matrix(tuple(self.ev(cell) for cell in row) for row in node[1])
        if kind == "sum":
            return self.big_operator(node)
        raise _EvalError(f"not a scalar: {kind}")

    def add(self, a, b):
        if isinstance(a, _Matrix) or isinstance(b, _Matrix):
            if not (isinstance(a, _Matrix) and isinstance(b, _Matrix)) or len(a) != len(b) or len(a[0]) != len(b[0]):
                raise _EvalError("matrix shapes differ")
            return _Matrix(tuple(x + y for x, y in zip(ra, rb)) for ra, rb in zip(a, b))
        return a + b

    def mul(self, a, b):
        if isinstance(a, _Matrix) and isinstance(b, _Matrix):
            if len(a[0]) != len(b):
                raise _EvalError("matrix shapes do not multiply")
            return _Matrix(
                tuple(sum((a[i][k] * b[k][j] for k in range(len(b))), self.ctx.mpf(0)) for j in range(len(b[0])))
                for i in range(len(a))
            )
        if isinstance(a, _Matrix):
            return _Matrix(tuple(x * b for x in row) for row in a)
        if isinstance(b, _Matrix):
            return _Matrix(tuple(a * x for x in row) for row in b)
        return a * b

    def power(self, node):
        ctx = self.ctx
        base = self.ev(node[1])
        exponent = self.ev(node[2])
        if isinstance(exponent, _Matrix):
            raise _EvalError("matrix exponent")
        if isinstance(base, _Matrix):
            n = int(exponent.real) if _is_real(ctx, exponent) and exponent == int(exponent.real) else -1
            if n < 1 or n > 64:
                raise _EvalError("unsupported matrix power")
            result = base
            for _ in range(n - 1):
                result = self.mul(result, base)
            return result
        if abs(exponent) > _MAX_EXPONENT or (abs(base) > 1 and abs(exponent) * ctx.log(abs(base), 2) > 10**7):
            raise _EvalError("power too large")
        exact = _exact(node[2])
        if exact is not None and exact.denominator % 2 == 1 and _is_real(ctx, base) and base < 0:
            # Real odd roots of negative reals: (-8)^(1/3) = -2, as in MATH.
            magnitude = ctx.power(-base, ctx.mpf(exact.numerator) / exact.denominator)
            return -magnitude if exact.numerator % 2 else magnitude
        return ctx.power(base, exponent)

    def call(self, name: str, args: tuple):
        ctx = self.ctx
        values = [self.ev(a) for a in args]
        if name == "det":
            return self.determinant(values[0])
        if any(isinstance(v, _Matrix) for v in values):
            raise _EvalError(f"{name} of a matrix")
        if name in _UNARY and len(values) == 1:
            return _UNARY[name](ctx, values[0])
        if name in ("log", "ln") and len(values) == 2:
            return ctx.log(values[0]) / ctx.log(values[1])
        if name == "root" and len(values) == 2:
            index = _exact(args[1])
            x = values[0]
            if index is not None and index.denominator == 1 and index % 2 == 1 and _is_real(ctx, x) and x < 0:
                return -ctx.root(-x, int(index))
            return ctx.power(x, 1 / values[1])
        if name == "binom" and len(values) == 2:
            return ctx.binomial(values[0], values[1])
        if name in ("max", "min", "gcd", "lcm") and values and all(_is_real(ctx, v) for v in values):
            reals = [ctx.re(v) for v in values]
            if name == "max":
                return max(reals)
            if name == "min":
                return min(reals)
            ints = [int(v) for v in reals]
            if any(i != v or abs(i) > 10**30 for i, v in zip(ints, reals)):
                raise _EvalError(f"{name} of non-integers")
            return ctx.mpf(math.gcd(*ints) if name == "gcd" else math.lcm(*ints))
        return _unknown_function(ctx, name)(*values)

    def determinant(self, value):
        if not isinstance(value, _Matrix) or len(value) != len(value[0]) or len(value) > 6:
            raise _EvalError("det needs a small square matrix")
        return self.ctx.det(self.ctx.matrix([list(row) for row in value]))

    def big_operator(self, node):
        _, kind, var, lo_node, hi_node, body = node
        lo, hi = self.ev(lo_node), self.ev(hi_node)
        if not (_is_real(self.ctx, lo) and _is_real(self.ctx, hi)) or lo != int(lo) or hi != int(hi):
            raise _EvalError("sum bounds must be integers")
        lo, hi = int(lo), int(hi)
        if hi - lo > 10_000:
            raise _EvalError("sum too long")
        saved = self.env.get(var)
        total = self.ctx.mpf(0 if kind == "sum" else 1)
        try:
            for k in range(lo, hi + 1):
                self.env[var] = self.ctx.mpf(k)
                value = self.ev(body)
                total = total + value if kind == "sum" else total * value
        finally:
            if saved is None:
                self.env.pop(var, None)
            else:
                self.env[var] = saved
        return total


def _factorial(ctx, x):
    if not _is_real(ctx, x) or abs(x) > _MAX_FACTORIAL or (x < 0 and x == int(ctx.re(x))):
        raise _EvalError("factorial out of range")
    return ctx.gamma(x + 1)


def _real_only(function):
    def wrapped(ctx, x):
        if not _is_real(ctx, x):
            raise _EvalError("needs a real argument")
        return function(ctx, ctx.re(x))

    return wrapped


_UNARY = {
    "sin": lambda c, x: c.sin(x), "cos": lambda c, x: c.cos(x), "tan": lambda c, x: c.tan(x),
    "sec": lambda c, x: c.sec(x), "csc": lambda c, x: c.csc(x), "cot": lambda c, x: c.cot(x),
    "arcsin": lambda c, x: c.asin(x), "arccos": lambda c, x: c.acos(x), "arctan": lambda c, x: c.atan(x),
    "arcsec": lambda c, x: c.asec(x), "arccsc": lambda c, x: c.acsc(x), "arccot": lambda c, x: c.acot(x),
    "sinh": lambda c, x: c.sinh(x), "cosh": lambda c, x: c.cosh(x), "tanh": lambda c, x: c.tanh(x),
    "exp": lambda c, x: c.exp(x), "ln": lambda c, x: c.log(x), "log": lambda c, x: c.log(x),
    "sqrt": lambda c, x: c.sqrt(x), "abs": lambda c, x: abs(x), "fact": _factorial,
    "floor": _real_only(lambda c, x: c.floor(x)), "ceil": _real_only(lambda c, x: c.ceil(x)),
    "sgn": _real_only(lambda c, x: c.sign(x)),
}


def _close(ctx, a, b) -> bool:
    if isinstance(a, _Matrix) or isinstance(b, _Matrix):
        return (
            isinstance(a, _Matrix) and isinstance(b, _Matrix) and len(a) == len(b) and len(a[0]) == len(b[0])
            and all(_close(ctx, x, y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))
        )
    if ctx.isinf(a) or ctx.isinf(b) or ctx.isnan(a) or ctx.isnan(b):
        return bool(ctx.isinf(a) and ctx.isinf(b) and a == b)
    diff = abs(a - b)
    return diff <= _REL_TOL * max(abs(a), abs(b)) or diff <= ctx.mpf(10) ** -40


def _assignments(ctx, nodes: Sequence[tuple]):
    """Yields symbol assignments: one for constant trees, _TRIALS for trees with symbols."""
    names: set = set()
    integer_names: set = set()
    for node in nodes:
        _symbols(node, names, integer_names)
    names -= integer_names
    for trial in range(_TRIALS if names or integer_names else 1):
        env = {name: _symbol_value(ctx, name, trial) for name in names}
        env.update({name: ctx.mpf(3 + _seed(name, trial) % 5) for name in integer_names})
        yield env


_EVAL_ERRORS = (_EvalError, ArithmeticError, ValueError, TypeError, KeyError, IndexError)


def _numeric_equal(a, b, places: int | None) -> bool:
    """Same value at every sampled point (a decimal literal may instead round the other side)."""
    ctx = _ctx()
    agreed = trials = 0
    for env in _assignments(ctx, (a, b)):
        trials += 1
        evaluator = _Evaluator(ctx, env)
        try:
            va, vb = evaluator.ev(a), evaluator.ev(b)
        except _EVAL_ERRORS:
            continue
        if _close(ctx, va, vb):
            agreed += 1
        elif (places or 0) >= _MIN_ROUNDING_PLACES and not isinstance(va, _Matrix) and not isinstance(vb, _Matrix):
            tolerance = ctx.mpf(5) * ctx.mpf(10) ** -(places + 1) + abs(vb) * ctx.mpf(10) ** -15
            if abs(va - vb) > tolerance:
                return False
            agreed += 1
        else:
            return False
    return agreed >= min(trials, 2) and agreed > 0


def _proportional(d1, d2, positive: bool) -> bool:
    """d1 = c * d2 for one constant c != 0 (c > 0 when `positive`) at every sampled point."""
    ctx = _ctx()
    ratio = None
    agreed = 0
    for env in _assignments(ctx, (d1, d2)):
        evaluator = _Evaluator(ctx, env)
        try:
            v1, v2 = evaluator.ev(d1), evaluator.ev(d2)
        except _EVAL_ERRORS:
            continue
        if isinstance(v1, _Matrix) or isinstance(v2, _Matrix):
            return False
        if _close(ctx, v1, 0) and _close(ctx, v2, 0):
            continue
        if _close(ctx, v1, 0) or _close(ctx, v2, 0):
            return False
        r = v1 / v2
        if ratio is None:
            ratio = r
            if positive and not (_is_real(ctx, r) and r > 0):
                return False
        elif not _close(ctx, r, ratio):
            return False
        agreed += 1
    return agreed >= 2


# --------------------------------------------------------------------------------------------
# Comparison of trees
# --------------------------------------------------------------------------------------------

_COLLECTIONS = {"list", "set", "tuple", "interval", "union", "setop", "matrix", "ratio"}
_SET_LIKE = {"interval", "union", "setop"}


def _readings(node, is_pred: bool) -> list[tuple]:
    """The ways to read an answer: itself, the value of `label = value`, the end of a chain.

    Only the prediction reads `expression = value` as its value ("1/2 + 1/6 = 2/3"); a
    reference equation such as `7 = 11a + c` stays an equation.
    """
    readings = [node]
    if node[0] != "rel":
        return readings
    ops, parts = node[1], node[2]
    value = _labelled_value(node)
    if value is not None:
        readings.append(value)
    chain_end = (len(parts) >= 3 and all(op == "=" for op in ops)) or (is_pred and ops[-1] == "=")
    if chain_end and parts[-1] not in readings:
        readings.append(parts[-1])
    return readings


def _equiv(pred, gold) -> bool:
    return any(_match(p, g) for p in _readings(pred, True) for g in _readings(gold, False))


def _has_pm(node) -> bool:
    if not isinstance(node, tuple) or not node or not isinstance(node[0], str):
        return False
    if node[0] == "pm":
        return True
    if node[0] in _COLLECTIONS or node[0] == "rel":
        return False
    return any(_has_pm(child) for child in node[1:] if isinstance(child, tuple)) or any(
        _has_pm(item) for child in node[1:] if isinstance(child, tuple) and child and not isinstance(child[0], str)
        for item in child
    )


def _expand_pm(node) -> list[tuple]:
    """`a \\pm b` -> [a + b, a - b]; independent signs for several \\pm (at most 8 values)."""
    if not isinstance(node, tuple) or not node or not isinstance(node[0], str):
        return [node]
    if node[0] == "pm":
        lefts = [None] if node[1] is None else _expand_pm(node[1])
        results = []
        for right in _expand_pm(node[2]):
            for left in lefts:
                for signed in (right, ("neg", right)):
                    results.append(signed if left is None else ("add", (left, signed)))
        return results[:8]
    options = [[]]
    for child in node[1:]:
        if isinstance(child, tuple) and child and isinstance(child[0], str):
            choices = _expand_pm(child)
        elif isinstance(child, tuple):
            combos = [[]]
            for item in child:
                combos = [c + [x] for c in combos for x in _expand_pm(item)][:8]
            choices = [tuple(c) for c in combos]
        else:
            choices = [child]
        options = [o + [c] for o in options for c in choices][:8]
    return [(node[0], *o) for o in options]


def _members(node) -> list[tuple]:
    items = node[1] if node[0] in ("list", "set") else (node,)
    members = []
    for item in items:
        for member in _expand_pm(item) if _has_pm(item) else [item]:
            if member not in members:
                members.append(member)
    return members


def _match(a, b) -> bool:
    """Equality of two readings (pred first, gold second)."""
    if a == b:
        return True
    if a[0] == "pct" or b[0] == "pct":
        if a[0] == b[0]:
            return _match(a[1], b[1])
        inner, other = (a[1], b) if a[0] == "pct" else (b[1], a)
        hundred = ("num", Fraction(100), 0)
        if a[0] == "pct":
            return _match(inner, other) or _match(("div", inner, hundred), other)
        return _match(other, inner) or _match(other, ("div", inner, hundred))
    if a[0] == "rel" or b[0] == "rel":
        return _match_relations(a, b)
    if _has_pm(a) or _has_pm(b):
        return _match_unordered(_members(a), _members(b))
    if a[0] in _COLLECTIONS or b[0] in _COLLECTIONS:
        return _match_collections(a, b)
    return _scalar_equal(a, b)


def _scalar_equal(a, b) -> bool:
    pa, pb = _places(a), _places(b)
    places = pa if pb is None else pb if pa is None else None
    ea, eb = _exact(a), _exact(b)
    if ea is not None and eb is not None:
        if ea == eb:
            return True
        return places is not None and places >= _MIN_ROUNDING_PLACES and abs(ea - eb) <= Fraction(1, 2 * 10**places)
    if pa is not None and pb is not None:
        return False
    return _numeric_equal(a, b, places)


def _match_unordered(xs: list, ys: list) -> bool:
    if len(xs) != len(ys):
        return False
    unused = list(ys)
    for x in xs:
        for k, y in enumerate(unused):
            if _equiv(x, y):
                del unused[k]
                break
        else:
            return False
    return True


def _match_ordered(xs: Sequence, ys: Sequence) -> bool:
    return len(xs) == len(ys) and all(_equiv(x, y) for x, y in zip(xs, ys))


def _vector(node) -> tuple | None:
    """Entries of a one-row or one-column matrix, or None."""
    rows = node[1]
    if len(rows) == 1:
        return rows[0]
    if all(len(r) == 1 for r in rows):
        return tuple(r[0] for r in rows)
    return None


def _match_collections(a, b) -> bool:
    ka, kb = a[0], b[0]
    if ka in ("list", "set") and kb in ("list", "set"):
        return _match_unordered(_members(a), _members(b))
    if ka in _SET_LIKE or kb in _SET_LIKE:
        return _match_sets(a, b)
    if ka == kb == "matrix":
        return len(a[1]) == len(b[1]) and all(_match_ordered(ra, rb) for ra, rb in zip(a[1], b[1]))
    if "matrix" in (ka, kb) and (ka not in _COLLECTIONS or kb not in _COLLECTIONS):
        return _numeric_equal(a, b, None)  # matrix arithmetic: A + B, A B, 2 A
    if ka == kb and ka in ("tuple", "ratio"):
        return _match_ordered(a[1], b[1])
    sequences = []
    for node in (a, b):
        if node[0] in ("tuple", "list", "set"):
            sequences.append(node[1])
        elif node[0] == "matrix":
            sequences.append(_vector(node))
        elif node[0] in _COLLECTIONS:
            return False
        else:
            sequences.append((node,))
    if sequences[0] is None or sequences[1] is None:
        return False
    return _match_ordered(sequences[0], sequences[1])


def _orient(node) -> tuple[tuple, tuple]:
    """Relation chain written with < and <= where it was written with > and >=."""
    ops, parts = node[1], node[2]
    if all(op in (">", ">=") for op in ops):
        return tuple(_FLIPPED[op] for op in reversed(ops)), tuple(reversed(parts))
    return ops, parts


def _match_relations(a, b) -> bool:
    if a[0] == "rel" and b[0] == "rel":
        oa, pa = _orient(a)
        ob, pb = _orient(b)
        if oa == ob:
            if _match_ordered(pa, pb):
                return True
            scalar = not any(p[0] in _COLLECTIONS or _has_pm(p) for p in pa + pb)
            if len(oa) == 1 and oa[0] in ("=", "!=", "<", "<=") and scalar:
                d1 = ("add", (pa[0], ("neg", pa[1])))
                d2 = ("add", (pb[0], ("neg", pb[1])))
                if _proportional(d1, d2, positive=oa[0] in ("<", "<=")):
                    return True
    if a[0] == b[0] == "rel":
        inequality = {"<", "<=", ">", ">=", "!=", "in"}
        if set(a[1]) & inequality or set(b[1]) & inequality:
            return _match_sets(a, b)  # x \in [-2, 7] vs -2 <= x <= 7
        return False
    if any(n[0] in _SET_LIKE or n[0] in ("set", "tuple") for n in (a, b)):
        return _match_sets(a, b)  # 0 < f(x) < 1 vs (0, 1)
    return False


# Sets of reals: lists of components (lo, hi, left_open, right_open, lo_node, hi_node).


def _constant(node):
    """Real value of a constant tree, or None."""
    if _has_pm(node) or node[0] in _COLLECTIONS or node[0] == "rel":
        return None
    names: set = set()
    _symbols(node, names, names)
    if names:
        return None
    ctx = _ctx()
    try:
        value = _Evaluator(ctx, {}).ev(node)
    except _EVAL_ERRORS:
        return None
    if isinstance(value, _Matrix) or not _is_real(ctx, value):
        return None
    return ctx.re(value)


def _set_components(node) -> list | None:
    kind = node[0]
    if kind == "interval" or (kind == "tuple" and len(node[1]) == 2):
        lo_node, hi_node = (node[1], node[2]) if kind == "interval" else node[1]
        left_open, right_open = (node[3], node[4]) if kind == "interval" else (True, True)
        lo, hi = _constant(lo_node), _constant(hi_node)
        if lo is None or hi is None or lo > hi:
            return None
        return [(lo, hi, left_open, right_open, lo_node, hi_node)]
    if kind in ("set", "list"):
        components = []
        for member in _members(node):
            value = _constant(member)
            if value is None:
                return None
            components.append((value, value, False, False, member, member))
        return components
    if kind == "union":
        components = []
        for part in node[1]:
            sub = _set_components(part)
            if sub is None:
                return None
            components.extend(sub)
        return components
    if kind == "rel":
        return _relation_set(node)
    return None


def _canonical_set(components: list) -> list:
    """Sorted, with overlapping or touching components merged."""
    merged: list = []
    for comp in sorted(components, key=lambda c: (c[0], c[2], c[1])):
        if merged:
            lo, hi, lopen, ropen, lo_node, _ = merged[-1]
            touches = comp[0] < hi or (comp[0] == hi and not (ropen and comp[2]))
            if touches:
                if comp[1] > hi or (comp[1] == hi and ropen and not comp[3]):
                    merged[-1] = (lo, comp[1], lopen, comp[3], lo_node, comp[5])
                continue
        merged.append(comp)
    return merged


def _match_sets(a, b) -> bool:
    ca, cb = _set_components(a), _set_components(b)
    if ca is None or cb is None:
        return False
    ca, cb = _canonical_set(ca), _canonical_set(cb)
    if len(ca) != len(cb):
        return False
    ctx = _ctx()
    for x, y in zip(ca, cb):
        if x[2] != y[2] or x[3] != y[3]:
            return False
        for vx, vy, nx, ny in ((x[0], y[0], x[4], y[4]), (x[1], y[1], x[5], y[5])):
            if nx is not None and ny is not None:
                if not _scalar_equal(nx, ny):
                    return False
            elif not _close(ctx, vx, vy):
                return False
    return True


def _is_variable(node) -> bool:
    """x, a_n or f(x): what `a < x < b` bounds directly (|x| or x^2 needs solving)."""
    return node[0] in ("sym", "idx") or (node[0] == "call" and node[1] not in _WORD_FUNCS and _is_label(node))


def _ray(ctx, value, node, below: bool, open_end: bool) -> tuple:
    if below:
        return (-ctx.inf, value, True, open_end, ("neg", ("const", "inf")), node)
    return (value, ctx.inf, open_end, True, node, ("const", "inf"))


def _relation_set(node) -> list | None:
    """The real solution set of a relation in one unknown: `x \\in S`, `a < x <= b`, `|z| <= 3`."""
    ops, parts = _orient(node)
    ctx = _ctx()
    if ops == ("in",) and _is_label(parts[0]):
        return _set_components(parts[1])
    if all(op in ("<", "<=") for op in ops) and len(parts) in (2, 3):
        values = [_constant(p) for p in parts]
        if len(parts) == 3 and _is_variable(parts[1]) and values[0] is not None and values[2] is not None:
            return [(values[0], values[2], ops[0] == "<", ops[1] == "<", parts[0], parts[2])]
        if len(parts) == 2 and _is_variable(parts[0]) and values[1] is not None:
            return [_ray(ctx, values[1], parts[1], True, ops[0] == "<")]
        if len(parts) == 2 and _is_variable(parts[1]) and values[0] is not None:
            return [_ray(ctx, values[0], parts[0], False, ops[0] == "<")]
    if ops == ("!=",) and _is_variable(parts[0]):
        value = _constant(parts[1])
        if value is not None:
            return [_ray(ctx, value, parts[1], True, True), _ray(ctx, value, parts[1], False, True)]
    return _sympy_relation_set(ops, parts)


# --------------------------------------------------------------------------------------------
# sympy: the slow, general fallback
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _sympy():
    """sympy, imported on first use: it takes a few hundred ms, kept out of every time limit."""
    import sympy  # pylint: disable=import-outside-toplevel
    from sympy.parsing.latex import parse_latex  # pylint: disable=import-outside-toplevel

    parse_latex("x")  # loads the ANTLR parser and warms its caches
    return sympy, parse_latex


_SYMPY_FUNCS = {
    "sin": "sin", "cos": "cos", "tan": "tan", "sec": "sec", "csc": "csc", "cot": "cot", "arcsin": "asin",
    "arccos": "acos", "arctan": "atan", "sinh": "sinh", "cosh": "cosh", "tanh": "tanh", "exp": "exp",
    "ln": "log", "log": "log", "sqrt": "sqrt", "abs": "Abs", "floor": "floor", "ceil": "ceiling",
}


def _to_sympy(node):
    """sympy expression of a scalar tree (symbols real); raises _EvalError where there is none."""
    sympy, _ = _sympy()
    kind = node[0]
    if kind == "num":
        return sympy.Rational(node[1].numerator, node[1].denominator)
    if kind == "sym":
        return sympy.Symbol(node[1], real=True)
    if kind == "const":
        return {"pi": sympy.pi, "e": sympy.E, "i": sympy.I, "inf": sympy.oo}[node[1]]
    if kind == "add":
        return sympy.Add(*[_to_sympy(t) for t in node[1]])
    if kind == "mul":
        return sympy.Mul(*[_to_sympy(f) for f in node[1]])
    if kind == "neg":
        return -_to_sympy(node[1])
    if kind == "div":
        return _to_sympy(node[1]) / _to_sympy(node[2])
    if kind == "pow":
        exponent = _exact(node[2])
        if exponent is not None and abs(exponent) > _MAX_EXACT_EXPONENT:
            raise _EvalError("exponent too large for sympy")
        return sympy.Pow(_to_sympy(node[1]), _to_sympy(node[2]))
    if kind == "pct":
        return _to_sympy(node[1]) / 100
    if kind == "call" and node[1] in _SYMPY_FUNCS and len(node[2]) == 1:
        return getattr(sympy, _SYMPY_FUNCS[node[1]])(_to_sympy(node[2][0]))
    raise _EvalError(f"no sympy form for {kind}")


def _sympy_relation_set(ops: tuple, parts: tuple) -> list | None:
    if not all(op in ("<", "<=", "=", "!=") for op in ops):
        return None
    try:
        sympy, _ = _sympy()
        exprs = [_to_sympy(p) for p in parts]
        free = set().union(*(e.free_symbols for e in exprs))
        if len(free) != 1:
            return None
        make = {"<": sympy.Lt, "<=": sympy.Le, "=": sympy.Eq, "!=": sympy.Ne}
        relation = sympy.And(*[make[op](exprs[k], exprs[k + 1]) for k, op in enumerate(ops)])
        solution = relation.as_set()
    except (_EvalError, ArithmeticError, ValueError, TypeError, NotImplementedError, AttributeError):
        return None
    return _from_sympy_set(solution)


def _from_sympy_set(solution) -> list | None:
    sympy, _ = _sympy()
    ctx = _ctx()

    def value(x):
        if x in (sympy.oo, -sympy.oo):
            return ctx.inf if x == sympy.oo else -ctx.inf
        return ctx.mpf(str(sympy.N(x, _DPS)))

    parts = solution.args if isinstance(solution, sympy.Union) else (solution,)
    components = []
    for part in parts:
        if isinstance(part, sympy.Interval):
            lo, hi = value(part.start), value(part.end)
            components.append((lo, hi, bool(part.left_open), bool(part.right_open), None, None))
        elif isinstance(part, sympy.FiniteSet):
            components.extend((value(x), value(x), False, False, None, None) for x in part)
        else:
            return None
    return components


def _sympy_equal(pred: str, gold: str) -> bool:
    """parse_latex on both sides, then sympy: for LaTeX the small parser does not take."""
    sympy, parse_latex = _sympy()
    try:
        a, b = parse_latex(pred), parse_latex(gold)
    except Exception:  # noqa: BLE001 - parse_latex raises many unrelated types on bad input
        return False
    if isinstance(a, sympy.Expr) and isinstance(b, sympy.Expr):
        return bool(sympy.simplify(a - b) == 0)
    return bool(a == b)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------

_DECIMAL_COMMA_RE = re.compile(r"[-+]?\d+,\d+")


def _decimal_comma_readings(s: str) -> list[str]:
    """`2,74` also reads as 2.74 (decimal comma) when it cannot be a thousands separator."""
    return [s, s.replace(",", ".")] if _DECIMAL_COMMA_RE.fullmatch(s) else [s]


def _equivalent_normalized(pred: str, gold: str) -> bool:
    for p in _decimal_comma_readings(pred):
        for g in _decimal_comma_readings(gold):
            tp, tg = _parse_answer(p), _parse_answer(g)
            if tp is None or tg is None:
                continue
            if tp.textual or tg.textual:
                if _compact(p).lower() == _compact(g).lower():
                    return True
                continue
            if _equiv(tp.tree, tg.tree):
                return True
    unparsed = _parse_answer(pred) is None or _parse_answer(gold) is None
    if unparsed and max(len(pred), len(gold)) <= _MAX_SYMPY_PARSE_CHARS:
        return _sympy_equal(pred, gold)
    return False


def is_equivalent(pred: str, gold: str) -> bool:
    """Whether two already extracted answers are mathematically the same.

    Args:
      pred: the model's answer, e.g. "\\dfrac{1}{2}" or "x = 0.5".
      gold: the reference answer, e.g. "1/2".

    Returns:
      True when equivalent; False otherwise, also on any error or after the time limit.
    """
    if pred is None or gold is None:
        return False
    if len(pred) > 20 * _MAX_ANSWER_CHARS or len(gold) > 20 * _MAX_ANSWER_CHARS:
        return pred.strip() == gold.strip()
    try:
        p, g = _normalize(pred), _normalize(gold)
        if not p or not g:
            return False
        if _compact(p) == _compact(g):
            return True
        if len(p) > _MAX_ANSWER_CHARS or len(g) > _MAX_ANSWER_CHARS:
            return False
        _sympy()
        with _time_limit(_SYMBOLIC_TIMEOUT_S):
            return _equivalent_normalized(p, g)
    except _Timeout:
        return False
    except Exception:  # noqa: BLE001 - any failure of a symbolic step means "not shown equivalent"
        return False


# References repeat across the samples of one prompt; their extraction is cached.
_extract_reference = functools.lru_cache(maxsize=4096)(extract_answer)


def grade(response: str, gold: str) -> float:
    """SCoRe's MATH reward: 1.0 if the response's final answer matches the reference, else 0.0.

    Args:
      response: model output (any length).
      gold: reference answer: bare, `$...$`, `\\boxed{...}` or a full solution.
    """
    try:
        pred, ref = extract_answer(response), _extract_reference(gold)
    except Exception:  # noqa: BLE001 - a reward must never raise
        return 0.0
    if pred is None or ref is None:
        return 0.0
    return 1.0 if is_equivalent(pred, ref) else 0.0


# --------------------------------------------------------------------------------------------
# Process pool for grade_batch
# --------------------------------------------------------------------------------------------


def _worker_main(conn) -> None:
    """Pool worker: says "ready", then receives (index, response, gold) and sends (index, reward).

    None stops it.
    """
    _sympy()  # imported once here, not inside the first item's time limit
    conn.send("ready")
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        index, response, gold = job
        conn.send((index, grade(response, gold)))


class _Worker:
    """One spawned grading process and the item it is working on."""

    def __init__(self, context):
        self.conn, child = context.Pipe()
        # spawn, not fork: the trainer holds JAX and other threads, which fork would copy locked.
        self.process = context.Process(target=_worker_main, args=(child,), name="math-grader", daemon=True)
        self.process.start()
        child.close()
        self.index: int | None = None
        self.started = 0.0

    def wait_ready(self) -> None:
        """Blocks until the worker has imported everything (about a second)."""
        if not self.conn.poll(_WORKER_START_TIMEOUT_S) or self.conn.recv() != "ready":
            self.kill()
            raise RuntimeError(
                f"math grader worker (pid {self.process.pid}) did not start within {_WORKER_START_TIMEOUT_S} s; "
                "check that score_jax imports in a fresh interpreter"
            )

    def stop(self) -> None:
        """Waits briefly for a worker that was sent None, then kills it."""
        self.process.join(timeout=1.0)
        self.kill()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5.0)
        self.conn.close()


class _Pool:
    """Fixed number of workers; a worker that dies or overruns _WORKER_TIMEOUT_S is replaced."""

    def __init__(self, size: int):
        self._context = multiprocessing.get_context("spawn")
        self._workers = [_Worker(self._context) for _ in range(size)]
        for worker in self._workers:
            worker.wait_ready()

    def _replace(self, worker: _Worker) -> _Worker:
        worker.kill()
        fresh = _Worker(self._context)
        self._workers[self._workers.index(worker)] = fresh
        fresh.wait_ready()
        return fresh

    def run(self, responses: Sequence[str], golds: Sequence[str]) -> list[float]:
        results = [0.0] * len(responses)
        queue = list(range(len(responses) - 1, -1, -1))  # popped from the end: input order
        failures = [0] * len(responses)
        idle = list(self._workers)
        busy: dict = {}

        def lost(worker: _Worker) -> None:
            # The worker died or hung on its item: retry the item once (the worker may have
            # been killed from outside), then give it 0.0.
            failures[worker.index] += 1
            if failures[worker.index] < 2:
                queue.append(worker.index)
            idle.append(self._replace(worker))

        while queue or busy:
            while idle and queue:
                worker, index = idle.pop(), queue.pop()
                worker.index, worker.started = index, time.monotonic()
                try:
                    worker.conn.send((index, responses[index], golds[index]))
                except (OSError, ValueError):
                    lost(worker)
                    continue
                busy[worker.conn] = worker
            for conn in multiprocessing.connection.wait(list(busy), timeout=0.25):
                worker = busy.pop(conn)
                try:
                    index, reward = conn.recv()
                except (EOFError, OSError):
                    lost(worker)
                    continue
                results[index] = reward
                idle.append(worker)
            now = time.monotonic()
            for conn, worker in list(busy.items()):
                if now - worker.started > _WORKER_TIMEOUT_S:
                    del busy[conn]
                    lost(worker)
        return results

    def close(self) -> None:
        for worker in self._workers:
            with contextlib.suppress(OSError, ValueError):
                worker.conn.send(None)
        for worker in self._workers:
            worker.stop()


_POOL: _Pool | None = None
_POOL_LOCK = threading.Lock()
# Workers in the grading pool; grading is CPU-bound Python, one process per core.
_POOL_SIZE = max(1, min(8, os.cpu_count() or 1))


def _close_pool() -> None:
    global _POOL
    with _POOL_LOCK:
        if _POOL is not None:
            _POOL.close()
            _POOL = None


atexit.register(_close_pool)


def grade_batch(responses: Sequence[str], golds: Sequence[str]) -> list[float]:
    """grade() over a batch in worker processes; safe to call from any thread.

    The pool starts on the first call (about a second per worker) and is reused. Calls from
    several threads take turns. A worker that dies or hangs is replaced and its item retried
    once; an item that fails twice scores 0.0.

    Args:
      responses: model outputs, one per episode.
      golds: references, aligned with `responses`.

    Returns:
      Rewards in {0.0, 1.0}, in input order.
    """
    if len(responses) != len(golds):
        raise ValueError(
            f"grade_batch got {len(responses)} responses but {len(golds)} golds; pass one gold per response"
        )
    if not responses:
        return []
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = _Pool(_POOL_SIZE)
        return _POOL.run(list(responses), list(golds))
