"""Text clean-up shared by extraction, normalisation and parsing: model-output debris, braces, math spans."""

from __future__ import annotations

import re

# Commands whose backslash was escaped twice (JSON-in-JSON, Python reprs): `\\frac` -> `\frac`.
# Only names that cannot follow a real LaTeX line break `\\` in an answer.
DOUBLE_ESCAPED_RE = re.compile(
    r"(?<!\\)\\\\(?=(?:frac|dfrac|tfrac|cfrac|sqrt|left|right|le|leq|ge|geq|lt|gt|ne|neq|boxed|fbox"
    r"|pi|cdot|times|div|pm|mp|infty|in|cup|cap|text|textbf|mathrm|mbox|circ|quad|qquad|dots|cdots"
    r"|ldots|sin|cos|tan|log|ln|alpha|beta|gamma|theta|approx|mathbf|overrightarrow)(?![a-zA-Z]))"
)
ONE_BACKSLASH = "\\\\"  # re replacement string for one backslash
_SPECIAL_TOKEN_RE = re.compile(r"<\|[A-Za-z0-9_]{1,40}\|>")


def clean_text(text: str) -> str:
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
    return DOUBLE_ESCAPED_RE.sub(ONE_BACKSLASH, text)


def brace_pairs(text: str) -> dict[int, int]:
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


def math_spans(text: str) -> list[tuple[int, int, str | None]]:
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


# Words that join the items of one answer: "1 and 2", "x = 1 or x = -1".
CONNECTIVES = {"and", "or"}


def nesting_depth(s: str, final: bool = False) -> int:
    """Deepest bracket nesting in `s`, or with `final` the depth still open at its end."""
    depth = best = 0
    for ch in s:
        if ch in "([{":
            depth += 1
            best = max(best, depth)
        elif ch in ")]}":
            depth -= 1
    return depth if final else best
