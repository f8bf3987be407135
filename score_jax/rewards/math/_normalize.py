"""Normalisation: the canonical LaTeX string of an extracted answer (step 2a of `is_equivalent`)."""

from __future__ import annotations

import functools
import re

from score_jax.rewards.math._text import DOUBLE_ESCAPED_RE, ONE_BACKSLASH, nesting_depth

_UNICODE = {
    "\u2212": "-",
    "\u2013": "-",
    "\u00d7": r"\times ",
    "\u00f7": r"\div ",
    "\u00b7": r"\cdot ",
    "\u2264": r"\le ",
    "\u2265": r"\ge ",
    "\u2260": r"\ne ",
    "\u2248": r"\approx ",
    "\u221e": r"\infty ",
    "\u03c0": r"\pi ",
    "\u221a": r"\sqrt ",
    "\u00b2": "^2",
    "\u00b3": "^3",
    "\u00b0": "",
    "\u2208": r"\in ",
    "\u222a": r"\cup ",
    "\u2229": r"\cap ",
    "\u00b1": r"\pm ",
    "\u2205": r"\emptyset ",
    "\u20ac": "",
    "\u00a3": "",
    "\u00a0": " ",
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
_REPEATING_DECIMAL_RE = re.compile(r"(?<!\d)(\d*)\.(\d{0,20})\\overline\s*\{(\d{1,20})\}")
_MIXED_NUMBER_RE = re.compile(r"(?<![\d.^_{a-zA-Z\\])(\d+)\s*\\frac\s*\{(\d+)\}\s*\{(\d+)\}")


def _repeating_decimal(match: re.Match) -> str:
    """0.1\\overline{6} -> (\\frac{15}{90})."""
    whole, fixed, repeat = match.group(1) or "0", match.group(2), match.group(3)
    num = int(whole + fixed + repeat) - int(whole + fixed)
    return f"(\\frac{{{num}}}{{{10 ** len(fixed) * (10 ** len(repeat) - 1)}}})"


@functools.lru_cache(maxsize=8192)
def normalize(s: str) -> str:
    """Canonical LaTeX string of an extracted answer (see the module docstring, step 2a)."""
    s = DOUBLE_ESCAPED_RE.sub(ONE_BACKSLASH, s)
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
        if nesting_depth(s[:start], final=True) == 0:  # "7,425,000" is a number, "(12,102)" a pair
            s = s[:start] + s[start:end].replace(",", "") + s[end:]
    if _SPACE_THOUSANDS_RE.fullmatch(s):
        s = s.replace(" ", "")
    s = re.sub(r"(?<=[\d)\]}])(and|or)(?=[A-Z(\[{\\])", r" \1 ", s)  # "x=1orx=-1"
    s = _REPEATING_DECIMAL_RE.sub(_repeating_decimal, s)
    s = _MIXED_NUMBER_RE.sub(r"(\1+\\frac{\2}{\3})", s)
    s = re.sub(r"\s+", " ", s).strip()
    s = _strip_trailing_punctuation(s.replace(_ROW_BREAK, "\\\\ "))
    s = re.sub(r"^(?:is|are|be)\s+|^(?:[:=]|\\approx)\s*", "", s)
    return s.strip()


def _strip_trailing_punctuation(s: str) -> str:
    """Trailing spaces, backslashes, commas, semicolons and full stops (not one of `..`) dropped.

    A backward scan, not a regex: `(...)+$` tries every start of a long run and is quadratic.
    """
    end = len(s)
    while end and (s[end - 1] in " \\,;" or s[end - 1] == "." and (end < 2 or s[end - 2] != ".")):
        end -= 1
    return s[:end]


def compact(s: str) -> str:
    """String key for the fast path: spaces dropped, `{x}` around one character dropped."""
    s = s.replace(" ", "")
    return re.sub(r"(?<=[\^_])\{(\w)\}|(?<=\\frac)\{(\w)\}\{(\w)\}", lambda m: "".join(g for g in m.groups() if g), s)
