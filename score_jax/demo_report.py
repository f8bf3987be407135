"""The demo's and the study's report (``report.md`` plus PNG plots in the workdir).

Tables are the paper's (Acc@t1, Acc@t2, Delta, Delta i->c, Delta c->i, answers changed, edit
distance) with the mean over seeds; with several seeds a second table gives each cell as
"mean ± half-width of the 95% t-interval over seeds". The study adds the task's properties, the
verdict on the paper's claim, the collapse diagnostics, Pair-SFT's distribution shift,
inference-time scaling and example transcripts (`score_jax.demo_probes` measures them).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from score_jax import metrics
from score_jax.demo_methods import TABLE_ABLATIONS, TABLE_BASELINES

COLUMNS = metrics.TABLE_COLUMNS + ("edit_distance_ratio",)
# Two-sided 97.5% quantiles of Student's t by degrees of freedom (n - 1 seeds); normal beyond 30.
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def t_quantile(dof: int) -> float:
    """The 0.975 quantile of Student's t with `dof` degrees of freedom."""
    if dof < 1:
        return float("nan")
    return _T975.get(dof, 2.042 if dof <= 30 else 1.960)


def interval(values: Sequence[float]) -> tuple[float, float]:
    """(mean, half-width of the 95% t-interval) of per-seed values; half-width nan for one seed."""
    x = np.asarray(values, float)
    if len(x) < 2:
        return float(x.mean()), float("nan")
    return float(x.mean()), t_quantile(len(x) - 1) * float(x.std(ddof=1)) / math.sqrt(len(x))


def mean_rows(per_seed, methods: Sequence[str]) -> dict[str, dict[str, float]]:
    """{method: metric means over seeds} of the final evaluations."""
    rows = {}
    for name in methods:
        finals = [s.methods[name]["final"] for s in per_seed]
        keys = [k for k in COLUMNS if all(k in f for f in finals)]
        rows[name] = {k: float(np.mean([f[k] for f in finals])) for k in keys}
    return rows


def interval_rows(per_seed, methods: Sequence[str]) -> dict[str, dict[str, tuple[float, float]]]:
    """{method: {metric: (mean, half-width)}} over seeds."""
    out = {}
    for name in methods:
        finals = [s.methods[name]["final"] for s in per_seed]
        out[name] = {k: interval([f[k] for f in finals]) for k in COLUMNS if all(k in f for f in finals)}
    return out


def interval_table(rows: dict[str, dict[str, tuple[float, float]]], methods: Sequence[str]) -> str:
    """Markdown: each cell "mean ± half-width" in percent."""
    head = "| method | " + " | ".join(metrics._HEADERS.get(c, c) for c in COLUMNS) + " |"
    lines = [head, "|---|" + "---|" * len(COLUMNS)]
    for name in methods:
        cells = []
        for c in COLUMNS:
            if c not in rows[name]:
                cells.append("")
                continue
            mean, half = rows[name][c]
            cells.append(f"{100 * mean:.1f}" + ("" if math.isnan(half) else f" ± {100 * half:.1f}"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def claim_verdict(rows: dict[str, dict[str, tuple[float, float]]], per_seed) -> list[str]:
    """The paper's claims in their own terms, each marked holds / does not hold, with the numbers."""
    lines = []
    if "SCoRe" not in rows:
        return lines
    others = [m for m in rows if m != "SCoRe"]
    for key, label in (("acc_t2", "Acc@t2"), ("delta", "Delta")):
        mean, half = rows["SCoRe"][key]
        lo = mean - (0 if math.isnan(half) else half)
        beaten = []
        for m in others:
            om, oh = rows[m][key]
            hi = om + (0 if math.isnan(oh) else oh)
            if not lo > hi:
                beaten.append(f"{m} ({100 * om:.1f} ± {100 * (0 if math.isnan(oh) else oh):.1f})")
        verdict = "holds" if not beaten else "does not hold"
        detail = "" if not beaten else "; intervals overlap or are above SCoRe's for: " + ", ".join(beaten)
        lines.append(
            f"- SCoRe's {label} ({100 * mean:.1f} ± {100 * (0 if math.isnan(half) else half):.1f}) above every "
            f"other method with non-overlapping 95% intervals: **{verdict}**{detail}."
        )
    for name, expect in (("naive multi-turn RL", "falls"), ("SCoRe", "does not fall")):
        change = change_trend(per_seed, name)
        if change is None:
            continue
        first, last = change
        falls = last < first
        ok = falls if expect == "falls" else not falls
        lines.append(
            f"- {name}'s rate of second attempts that change the answer {expect} over training "
            f"({100 * first:.1f}% at the first evaluation, {100 * last:.1f}% at the last, mean over seeds): "
            f"**{'holds' if ok else 'does not hold'}**."
        )
    return lines


def change_trend(per_seed, name: str) -> tuple[float, float] | None:
    """(first, last) of the mean answer-change rate over training evaluations, or None."""
    histories = [s.methods[name].get("history") or [] for s in per_seed if name in s.methods]
    histories = [h for h in histories if h and "eval/answer_changed" in h[0]]
    if not histories:
        return None
    return (
        float(np.mean([h[0]["eval/answer_changed"] for h in histories])),
        float(np.mean([h[-1]["eval/answer_changed"] for h in histories])),
    )


def _mean_curve(per_seed, name: str, key: str) -> tuple[list[int], list[float]]:
    histories = [s.methods[name].get("history") or [] for s in per_seed if name in s.methods]
    length = min((len(h) for h in histories), default=0)
    if not length:
        return [], []
    steps = [histories[0][i]["step"] for i in range(length)]
    return steps, [float(np.mean([h[i][key] for h in histories])) for i in range(length)]


def _finish(fig, ax, path: str) -> None:
    """Grid, legend, layout and save to `path`: the common end of the one-panel plots."""
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(per_seed, methods, keys_titles, path: str, base: dict | None, stage1_steps: int) -> bool:
    """One panel per (metric key, title): mean over seeds against RL step per method."""
    trained = [m for m in methods if any(s.methods[m].get("history") for s in per_seed)]
    if not trained:
        return False
    plt = _plt()
    fig, axes = plt.subplots(1, len(keys_titles), figsize=(5 * len(keys_titles), 4))
    axes = np.atleast_1d(axes)
    for ax, (key, title) in zip(axes, keys_titles):
        for name in trained:
            steps, values = _mean_curve(per_seed, name, key)
            if base is not None and key.split("/")[1] in base:
                steps, values = [0] + steps, [base[key.split("/")[1]]] + values
            ax.plot(steps, values, marker="o", markersize=3, label=name)
        if stage1_steps:
            ax.axvline(stage1_steps, linestyle="--", color="gray", linewidth=1)
        ax.set_title(title)
        ax.set_xlabel("RL step")
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_shift(per_seed, path: str) -> bool:
    """Pair-SFT's correction rates on fixed base-model first attempts vs on its own (Fig. 4)."""
    shifts = [s.methods["Pair-SFT"]["shift"] for s in per_seed if "shift" in s.methods.get("Pair-SFT", {})]
    if not shifts:
        return False
    plt = _plt()
    length = min(len(s) for s in shifts)
    steps = [shifts[0][i]["step"] for i in range(length)]
    fig, ax = plt.subplots(figsize=(5, 4))
    for key, label in (
        ("fixed_base_attempts", "base model's first attempts (fixed)"),
        ("own_attempts", "its own first attempts"),
    ):
        ax.plot(steps, [np.nanmean([s[i][key] for s in shifts]) for i in range(length)], marker="o", label=label)
    ax.set_xlabel("Pair-SFT update")
    ax.set_ylabel("fraction of wrong first attempts corrected")
    ax.set_title("Pair-SFT: distribution shift")
    _finish(fig, ax, path)
    plt.close(fig)
    return True


def plot_scaling(per_seed, methods, path: str) -> bool:
    """Majority vote over K parallel samples vs K/2 self-corrected samples (Fig. 1, right)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4))
    drawn = False
    for name in methods:
        results = [s.methods[name]["scaling"] for s in per_seed if "scaling" in s.methods.get(name, {})]
        if not results:
            continue
        for mode, style in (("parallel", "--"), ("corrected", "-")):
            budgets = sorted(int(b) for b in results[0][mode])
            values = [np.mean([r[mode][str(b)] if str(b) in r[mode] else r[mode][b] for r in results]) for b in budgets]
            ax.plot(budgets, values, style, marker="o", label=f"{name}: {mode}")
            drawn = True
    if not drawn:
        plt.close(fig)
        return False
    ax.set_xscale("log", base=2)
    ax.set_xlabel("samples per problem (K)")
    ax.set_ylabel("majority-vote accuracy")
    ax.set_title("Inference-time scaling, temperature 0.7")
    _finish(fig, ax, path)
    plt.close(fig)
    return True


def _visible_errors_line(props: dict) -> list[str]:
    """Whether the base model's errors show in its text (absent from reports written before it)."""
    seen = props.get("base_visible_errors")
    if seen is None:
        return []
    return [
        f"- Is checking cheap for it? {100 * seen['writes_true_sum']:.1f}% of its first attempts write their "
        f"pair's true sum, and {100 * seen['wrong_visibly_wrong']:.1f}% of its wrong ones write a sum that "
        "differs from the target (the error is in plain sight)."
    ]


def _sampled_line(props: dict) -> list[str]:
    """The base model's profile at the training temperature (absent from reports written before it)."""
    t = props.get("base_sampled")
    if t is None:
        return []
    return [
        f"- At the training temperature ({int(t['samples'])} sampled episodes), its second attempt fixes "
        f"{100 * t['fixes_wrong']:.1f}% of its wrong first answers and breaks {100 * t['breaks_right']:.1f}% of "
        f"its right ones (Acc@t1 {100 * t['acc_t1']:.1f}, Acc@t2 {100 * t['acc_t2']:.1f}): the corrections RL "
        "can reinforce, against the breakages it can remove by not changing."
    ]


def _properties_section(props: dict) -> str:
    base, disc = props["base"], props["base_discrimination"]
    retry = props["check_then_retry"]
    ceiling = props["ceiling"]
    curve = ", ".join(f"{h['step']}: {100 * h['acc_t1']:.1f}" for h in props.get("ceiling_history", []))
    b = {k: 100 * v for k, v in base.items()}
    lines = [
        "## The task, measured before any comparison",
        "",
        f"- Base model (greedy): Acc@t1 {b['acc_t1']:.1f}, Acc@t2 {b['acc_t2']:.1f}, Delta {b['delta']:+.1f}, "
        f"i->c {b['delta_i2c']:.1f}, c->i {b['delta_c2i']:.1f}, answers changed {b['answer_changed']:.1f}% "
        "(the paper's base model: 52.6 / 41.4 / -11.2, i->c 4.6, c->i 15.8).",
        "- Can the base model tell its wrong first answers from its right ones? It changes "
        f"{100 * disc['p_change_given_wrong']:.1f}% of its wrong ones and "
        f"{100 * disc['p_change_given_right']:.1f}% of its right ones.",
        *_visible_errors_line(props),
        *_sampled_line(props),
        f"- First-attempt ceiling: single-turn RL for {props.get('ceiling_steps', '?')} steps reaches Acc@t1 "
        f"{100 * ceiling['acc_t1']:.1f} (evaluations by step: {curve}).",
        '- "Check, then retry when wrong" (exact check, retry with the most frequent other sampled answer): '
        f"Acc@t2 {100 * retry['ceiling']['acc_t2_check_then_retry']:.1f} on the ceiling model "
        f"(its Acc@t1 {100 * retry['ceiling']['acc_t1']:.1f}); "
        f"{100 * retry['base']['acc_t2_check_then_retry']:.1f} on the base model "
        f"(Acc@t1 {100 * retry['base']['acc_t1']:.1f}). The gap is what a second attempt is worth at the optimum.",
    ]
    return "\n".join(lines)


def _printable(text: str) -> str:
    """A model's text for an inline code span: unprintable characters and backticks as "?"."""
    return "".join(ch if ch.isprintable() and ch != "`" else "?" for ch in text)


def _transcripts_section(per_seed, methods) -> str:
    lines = ["## Example transcripts (first seed, evaluation problems)", ""]
    first = per_seed[0]
    for name in methods:
        shown = first.methods[name].get("transcripts") or []
        if not shown:
            continue
        lines.append(f"**{name}**")
        lines.append("")
        for t in shown:
            feedback = f" / feedback `{_printable(t['feedback'])}`" if "feedback" in t else ""
            lines.append(
                f"- `{t['problem']}` -> attempt 1 `{_printable(t['attempt1'])}`{feedback} -> "
                f"attempt 2 `{_printable(t['attempt2'])}` ({t['outcome']})"
            )
        lines.append("")
    return "\n".join(lines)


def write(config, workdir: str, per_seed, properties: dict | None, wall_seconds: float) -> str:
    """Writes ``report.md`` and its plots; returns the report text."""
    demo = config.demo
    methods = list(demo.methods)
    seed_list = [s.seed for s in per_seed]
    means = mean_rows(per_seed, methods)
    base = means.get("base model")
    rl_methods = [m for m in methods if any(s.methods[m].get("history") for s in per_seed)]
    split = "validation" if demo.phase == "validation" else "held-out test"
    parts = [
        f"# score_jax {'study' if demo.study else 'offline demo'}: self-correction on the pair-sum task",
        "",
        f"Greedy decoding on {split} problems, mean over seeds {seed_list} (percent).",
        "",
        metrics.markdown_table(means, columns=COLUMNS),
    ]
    ranges = interval_rows(per_seed, methods)
    if demo.study:
        for title, names in (
            ("Table 2 (the paper's baselines)", TABLE_BASELINES),
            ("Table 4 (ablations)", TABLE_ABLATIONS),
        ):
            names = [m for m in names if m in ranges]
            parts += [
                "",
                f"## {title}: mean ± 95% interval over {len(per_seed)} seed(s)",
                "",
                interval_table(ranges, names),
            ]
        parts += ["", "## The paper's claims", "", *claim_verdict(ranges, per_seed)]
    elif len(per_seed) > 1:
        parts += ["", f"Mean ± 95% interval over {len(per_seed)} seeds:", "", interval_table(ranges, methods)]
    if properties is not None:
        parts += ["", _properties_section(properties)]
    if plot_curves(
        per_seed,
        rl_methods,
        (("eval/acc_t1", "Acc@t1"), ("eval/acc_t2", "Acc@t2")),
        os.path.join(workdir, "acc_over_training.png"),
        base,
        demo.stage1_steps,
    ):
        parts += ["", "![Acc@t1 and Acc@t2 over training](acc_over_training.png)"]
    if demo.study:
        if plot_curves(
            per_seed,
            rl_methods,
            (
                ("eval/answer_changed", "second attempts that change the answer"),
                ("eval/edit_distance_ratio", "edit distance between attempts"),
            ),
            os.path.join(workdir, "collapse.png"),
            base,
            demo.stage1_steps,
        ):
            parts += ["", "## Collapse diagnostics (the paper's Fig. 5/6)", "", "![collapse diagnostics](collapse.png)"]
        if plot_shift(per_seed, os.path.join(workdir, "pair_sft_shift.png")):
            parts += ["", "## Pair-SFT's distribution shift (Fig. 4)", "", "![Pair-SFT shift](pair_sft_shift.png)"]
        if plot_scaling(per_seed, methods, os.path.join(workdir, "inference_scaling.png")):
            parts += [
                "",
                "## Inference-time scaling (Fig. 1, right)",
                "",
                "![inference scaling](inference_scaling.png)",
            ]
        parts += ["", _transcripts_section(per_seed, methods)]
    parts += ["", "Per seed:", ""]
    for s in per_seed:
        parts += [
            f"Seed {s.seed}:",
            "",
            metrics.markdown_table({m: s.methods[m]["final"] for m in methods}, COLUMNS),
            "",
        ]
    parts += [f"Wall time of this invocation: {wall_seconds:.0f} s."]
    text = "\n".join(parts) + "\n"
    with open(os.path.join(workdir, "report.md"), "w", encoding="utf-8") as f:
        f.write(text)
    print(metrics.markdown_table(means, columns=COLUMNS), flush=True)
    return text
