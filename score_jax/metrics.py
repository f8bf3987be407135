"""Self-correction metrics and metric writers (TensorBoard, JSONL, a progress line).

Metric definitions follow the paper: Acc@t1 and Acc@t2 are accuracies of the first and second
attempts; Delta = Acc@t2 - Acc@t1; Delta i->c (c->i) is the fraction of ALL problems wrong (right)
at attempt 1 and right (wrong) at attempt 2, so Delta = i->c - c->i.
"""

from __future__ import annotations

import difflib
import json
import os
import sys
import time
from collections.abc import Sequence

import numpy as np


def self_correction_metrics(
    correct: np.ndarray,
    answers: Sequence[Sequence[str | None]] | None = None,
    texts: Sequence[Sequence[str]] | None = None,
) -> dict[str, float]:
    """The paper's table from per-attempt correctness [K, N] (K >= 2; 1 = right).

    `answers[k][i]`, when given, are extracted final answers (to count second attempts that
    change the answer); `texts[k][i]` the attempt texts (for the edit-distance ratio).
    """
    correct = np.asarray(correct, bool)
    if correct.ndim != 2 or correct.shape[0] < 1:
        raise ValueError(f"correct must be [attempts, problems], got shape {correct.shape}")
    out = {f"acc_t{k + 1}": float(correct[k].mean()) for k in range(correct.shape[0])}  # Acc@t(k+1)
    if correct.shape[0] >= 2:
        first, second = correct[0], correct[1]
        out["delta"] = out["acc_t2"] - out["acc_t1"]
        out["delta_i2c"] = float((~first & second).mean())
        out["delta_c2i"] = float((first & ~second).mean())
        if answers is not None:
            out["answer_changed"] = float(np.mean([a != b for a, b in zip(answers[0], answers[1])]))
        if texts is not None:
            out["edit_distance_ratio"] = float(np.mean([edit_distance_ratio(a, b) for a, b in zip(texts[0], texts[1])]))
    return out


def edit_distance_ratio(a: str, b: str) -> float:
    """1 - similarity of two attempts (0: identical, 1: nothing in common)."""
    return 1.0 - difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


TABLE_COLUMNS = ("acc_t1", "acc_t2", "delta", "delta_i2c", "delta_c2i", "answer_changed")
EVAL_COLUMNS = TABLE_COLUMNS + ("edit_distance_ratio",)  # the evaluation table (training's end, evaluate)
_HEADERS = {
    "acc_t1": "Acc@t1",
    "acc_t2": "Acc@t2",
    "delta": "Δ(t1,t2)",
    "delta_i2c": "Δ i→c",
    "delta_c2i": "Δ c→i",
    "answer_changed": "answer changed",
    "edit_distance_ratio": "edit distance",
}


def markdown_table(rows: dict[str, dict[str, float]], columns: Sequence[str] = TABLE_COLUMNS) -> str:
    """A markdown table in the paper's format (percentages) with one row per method."""
    head = "| method | " + " | ".join(_HEADERS.get(c, c) for c in columns) + " |"
    sep = "|---|" + "---|" * len(columns)
    lines = [head, sep]
    for name, metrics in rows.items():
        cells = [f"{100 * metrics[c]:.1f}" if c in metrics else "" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_markdown_table(text: str) -> dict[str, dict[str, float]]:
    """Inverse of `markdown_table` (percentages back to fractions); for reports and tests."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip().startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    inverse = {v: k for k, v in _HEADERS.items()}
    keys = [inverse.get(h, h) for h in header[1:]]
    rows = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = {k: float(v) / 100 for k, v in zip(keys, cells[1:]) if v}
    return rows


class MetricWriter:
    """Writes scalar metrics to TensorBoard event files and a JSONL file; no-op off process 0."""

    def __init__(self, workdir: str, enabled: bool = True, subdir: str = "tensorboard"):
        self.enabled = enabled
        self._tb = None
        self._jsonl = None
        self.workdir = workdir
        if enabled:
            os.makedirs(workdir, exist_ok=True)
            from tensorboardX import SummaryWriter  # event files without TensorFlow

            self._tb = SummaryWriter(os.path.join(workdir, subdir))
            # Open for the writer's life (closed by close()), appended to line by line.
            self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")  # noqa: SIM115

    def write(self, step: int, metrics: dict[str, float], prefix: str = "") -> None:
        if not self.enabled:
            return
        flat = {f"{prefix}{k}": float(v) for k, v in metrics.items() if np.ndim(v) == 0}
        for name, value in flat.items():
            self._tb.add_scalar(name, value, step)
        self._jsonl.write(json.dumps({"step": step, **flat}) + "\n")
        self._jsonl.flush()

    def write_samples(self, step: int, records: list[dict]) -> None:
        """Appends sampled episodes to ``samples.jsonl`` and shows them as TensorBoard text."""
        if not self.enabled or not records:
            return
        with open(os.path.join(self.workdir, "samples.jsonl"), "a", encoding="utf-8") as f:
            f.writelines(json.dumps({"step": step, **r}) + "\n" for r in records)
        self._tb.add_text("samples", "\n\n---\n\n".join(_sample_markdown(r) for r in records), step)

    def flush(self) -> None:
        if self.enabled:
            self._tb.flush()
            self._jsonl.flush()

    def close(self) -> None:
        if self.enabled:
            self._tb.close()
            self._jsonl.close()


def _sample_markdown(record: dict) -> str:
    """One episode as TensorBoard markdown: the prompt, then each attempt with its reward."""
    parts = [f"**prompt**\n\n```\n{record['prompt']}\n```"]
    for k, (text, reward) in enumerate(zip(record["attempts"], record["rewards"])):
        parts.append(f"**attempt {k + 1}** (reward {reward:g})\n\n```\n{text}\n```")
    return "\n\n".join(parts)


class Progress:
    """A one-line progress report with throughput and ETA."""

    def __init__(self, total: int, label: str = "", stream=None, enabled: bool = True):
        self.total, self.label, self.enabled = total, label, enabled
        self.stream = stream or sys.stdout
        self._start = time.monotonic()
        self._start_step: int | None = None

    def update(self, step: int, metrics: dict[str, float], keys: Sequence[str] = (), label: str = "") -> str:
        """Prints (and returns) the line for `step`; `label` replaces the progress label (e.g. the stage)."""
        now = time.monotonic()
        if self._start_step is None:  # the first step includes compilation: time from its end
            self._start_step, self._start = step, now
        done = step - self._start_step
        rate = done / (now - self._start) if done else 0.0
        eta = (self.total - step) / rate if rate > 0 else float("inf")
        shown = " ".join(f"{k}={metrics[k]:.3f}" for k in keys if k in metrics)
        line = f"[{label or self.label}] step {step}/{self.total} {shown} | {rate * 60:.1f} steps/min | ETA {_fmt(eta)}"
        if self.enabled:
            print(line, file=self.stream, flush=True)
        return line


def _fmt(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
