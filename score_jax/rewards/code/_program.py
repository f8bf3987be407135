"""The program in a model's reply: what the code reward runs (host side)."""

from __future__ import annotations

import re

_FENCE = re.compile(r"```(?:python|py|Python)?[ \t]*\n(.*?)```", re.DOTALL)
_BEGIN_DONE = re.compile(r"\[BEGIN\]\s*(.*?)\s*(?:\[DONE\]|$)", re.DOTALL)


def extract_program(text: str) -> str:
    """The program in a model's reply: the last fenced code block, MBPP's [BEGIN]...[DONE], or all of it."""
    blocks = _FENCE.findall(text)
    if blocks:
        return blocks[-1].strip("\n")
    match = _BEGIN_DONE.findall(text)
    if match:
        return match[-1]
    return text.strip("\n")
