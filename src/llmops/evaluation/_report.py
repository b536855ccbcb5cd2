"""The CI gate's reports: a Markdown summary for a pull-request comment and one self-contained HTML page.

Both render a `GateResult` and nothing else: the candidate experiment, its comparison with the baseline when there is
one, and the threshold checks. Everything that comes from data (inputs, outputs, metric names, ids, errors) is
hostile until escaped, and goes through one function per format: `_md` for Markdown (a pull-request comment renders
HTML, tables and @-mentions) and `_h` for HTML and SVG (a report page is opened in a browser).

Sizes are bounded whatever the dataset: the Markdown stays under a pull-request comment's limit (GitHub takes 65,536
characters), and the HTML page lists the most changed items only, draws at most `_MAX_BARS` bars per diff plot and
clips long texts.
"""

from __future__ import annotations

import html
import math
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from llmops.evaluation._results import (
    ExperimentRecord,
    GateResult,
    ItemResult,
    MetricComparison,
    MetricSummary,
    ThresholdCheck,
)

__all__ = ["render_html", "render_markdown", "write_reports"]

MARKDOWN_LIMIT = 60_000  # bytes of UTF-8; GitHub refuses comments over 65,536 characters
ITEM_LIMIT = 200  # rows of the HTML per-item table
_WORST_ITEMS = 5  # per regressed metric, in the Markdown summary
_MAX_FAILURES = 50
_MAX_BARS = 150  # per diff plot: more bars than pixels says nothing more and weighs a lot
_BINS = 10
_DASH = "—"

_RED = "#c62828"
_GREEN = "#2e7d32"
_CANDIDATE = "#1565c0"
_BASELINE = "#9e9e9e"


# -- what both formats show ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Row:
    """One metric's line of the summary table.

    ``candidate`` is over every item the candidate scored (what the thresholds check); ``baseline_mean`` is over the
    examples both experiments scored, like the difference (what the regression check compares).
    """

    metric: str
    higher_is_better: bool
    candidate: MetricSummary
    baseline_mean: float | None
    comparison: MetricComparison | None
    threshold: ThresholdCheck | None


def _rows(result: GateResult) -> list[_Row]:
    """The candidate's metrics, then any the comparison or the thresholds name that the candidate never scored."""
    comparisons = {c.metric: c for c in result.comparison.metrics} if result.comparison else {}
    thresholds = {t.metric: t for t in result.thresholds}
    names = dict.fromkeys([*result.candidate.metrics(), *comparisons, *thresholds])
    baseline = result.comparison.baseline if result.comparison else None
    rows = []
    for name in names:
        comparison, threshold = comparisons.get(name), thresholds.get(name)
        summary = result.candidate.summary(name)
        if comparison is not None:
            higher = comparison.higher_is_better
        elif threshold is not None:
            higher = threshold.higher_is_better
        else:
            higher = summary.higher_is_better
        if comparison is not None and comparison.pairs:
            base_mean = comparison.baseline_mean
        else:
            base_mean = baseline.summary(name).mean if baseline is not None else None
        rows.append(_Row(name, higher, summary, base_mean, comparison, threshold))
    return rows


def _paired(result: GateResult, metric: str) -> list[tuple[str, float, float]]:
    """(example id, baseline, candidate) for the examples both experiments scored, in the candidate's order."""
    if result.comparison is None:
        return []
    base = result.comparison.baseline.values(metric)
    cand = result.candidate.values(metric)
    pairs = [(example, base[example], value) for example, value in cand.items() if example in base]
    if not pairs:  # records loaded without their items: the comparison kept the per-item values
        for comparison in result.comparison.metrics:
            if comparison.metric == metric:
                return list(comparison.item_diffs)
    return pairs


def _worsening(higher_is_better: bool, baseline: float, candidate: float) -> float:
    """How much worse the candidate is (negative when better), in the metric's own direction."""
    return baseline - candidate if higher_is_better else candidate - baseline


def _worst(result: GateResult, row: _Row, count: int) -> list[tuple[str, float, float]]:
    pairs = [p for p in _paired(result, row.metric) if _worsening(row.higher_is_better, p[1], p[2]) > 0]
    pairs.sort(key=lambda p: _worsening(row.higher_is_better, p[1], p[2]), reverse=True)
    return pairs[:count]


def _num(value: float | None, scale: float | None = None) -> str:
    """Three decimals for scores, fewer for large values; ``scale`` sets the precision for numbers shown together."""
    if value is None:
        return _DASH
    magnitude = abs(value if scale is None else scale)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}"


def _signed(value: float, scale: float | None = None) -> str:
    text = _num(value, scale)
    return text if value < 0 else "+" + text


def _p_value(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _difference(comparison: MetricComparison | None) -> str:
    if comparison is None or comparison.pairs == 0:
        return _DASH
    scale = max(abs(comparison.difference), abs(comparison.ci_low), abs(comparison.ci_high))
    low, high = _signed(comparison.ci_low, scale), _signed(comparison.ci_high, scale)
    return f"{_signed(comparison.difference, scale)} [{low}, {high}]"


def _verdict(comparison: MetricComparison | None) -> str:
    if comparison is None or comparison.pairs == 0:
        return _DASH
    if comparison.regressed:
        return "▼ regressed"
    if comparison.improved:
        return "▲ improved"
    return "= no significant change"


def _threshold(check: ThresholdCheck | None) -> str:
    if check is None:
        return _DASH
    sign = "≥" if check.higher_is_better else "≤"
    return f"{sign} {_num(check.threshold)} {'✓' if check.passed else '✗'}"


def _method_note(rows: list[_Row]) -> str | None:
    """What Δ, its interval and p are, under the summary table."""
    compared = [row.comparison for row in rows if row.comparison is not None and row.comparison.pairs]
    if not compared:
        return None
    levels = " / ".join(sorted({f"{1 - c.alpha:.0%}" for c in compared}))
    tests = " / ".join(sorted({c.test for c in compared}))
    return (
        "Candidate: mean over the items it scored; baseline and Δ (candidate − baseline): over the examples both "
        f"scored, with Δ's {levels} bootstrap confidence interval; p from the {tests} test."
    )


def _cost(value: float) -> str:
    return f"${value:,.2f}" if value >= 1 else f"${value:.4f}"


def _totals_rows(candidate: ExperimentRecord, baseline: ExperimentRecord | None) -> list[tuple[str, str, str]]:
    """(label, candidate, baseline) lines of the totals table."""

    def lines(record: ExperimentRecord) -> list[tuple[str, str]]:
        t = record.totals()
        return [
            ("Items", f"{int(t['items']):,}"),
            ("Errored items", f"{int(t['errors']):,}"),
            ("Cached items", f"{int(t['cached']):,}"),
            ("Cost", _cost(t["cost_usd"])),
            ("Tokens", f"{int(t['input_tokens']):,} in / {int(t['output_tokens']):,} out"),
            ("Latency p50", f"{t['latency_p50_ms']:,.0f} ms"),
        ]

    cand = lines(candidate)
    base = lines(baseline) if baseline is not None else [(label, "") for label, _ in cand]
    return [(label, c, b) for (label, c), (_, b) in zip(cand, base, strict=True)]


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit:,} more characters)"


def _shorten(text: str, limit: int) -> str:
    """One line of at most ``limit`` characters."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


# -- Markdown --------------------------------------------------------------------------------------------------------

_MD_PUNCTUATION = re.compile(r"([\\`*_\[\]|~#])")
_MD_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def _md(text: str, limit: int = 200) -> str:
    """Data as inert Markdown text on one line, fit for a table cell.

    Markdown punctuation is backslash-escaped (a pipe would end the cell, a backtick open code), ``& < >`` become
    entities (comments render inline HTML), whitespace runs (newlines end a table row) become one space, and an
    ``@`` gets a word joiner after it so a model output cannot mention (and notify) people or teams.
    """
    line = _MD_PUNCTUATION.sub(r"\\\1", _shorten(text, limit))
    line = re.sub(r"[&<>]", lambda m: _MD_ENTITIES[m.group()], line)
    return line.replace("@", "@\u2060")


def _md_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _md_summary_table(rows: list[_Row], with_baseline: bool) -> list[str]:
    if with_baseline:
        header = ["Metric", "Candidate", "Baseline", "Δ [CI]", "p", "Verdict", "Threshold", "Errored"]
    else:
        header = ["Metric", "Candidate", "Threshold", "Errored"]
    lines = []
    for row in rows:
        cells = [_md(row.metric, 80), _num(row.candidate.mean)]
        if with_baseline:
            comparison = row.comparison
            cells += [
                _num(row.baseline_mean),
                _difference(comparison),
                _p_value(comparison.p_value) if comparison and comparison.pairs else _DASH,
                _verdict(comparison),
            ]
        cells += [_threshold(row.threshold), str(row.candidate.errors)]
        lines.append(cells)
    return _md_table(header, lines)


def _md_worst(result: GateResult, rows: list[_Row]) -> list[str]:
    inputs = {item.example_id: item.input for item in result.candidate.items}
    if result.comparison is not None:
        for item in result.comparison.baseline.items:
            inputs.setdefault(item.example_id, item.input)
    out: list[str] = []
    for row in rows:
        if row.comparison is None or not row.comparison.regressed:
            continue
        worst = _worst(result, row, _WORST_ITEMS)
        out += ["", f"### ▼ {_md(row.metric, 80)}: the items that got worse the most", ""]
        if not worst:
            out.append("_No per-item values to show._")
            continue
        out += _md_table(
            ["Example", "Input", "Baseline → candidate"],
            [
                [_md(example, 60), _md(inputs.get(example, ""), 80), f"{_num(base)} → {_num(cand)}"]
                for example, base, cand in worst
            ],
        )
    return out


def _md_fit(markdown: str, limit: int) -> str:
    """Cut at a line boundary to fit ``limit`` bytes, saying so (the HTML report has everything)."""
    if len(markdown.encode()) <= limit:
        return markdown
    note = "\n\n_Truncated to fit a comment: the full report is in report.html._\n"
    budget = limit - len(note.encode())
    kept: list[str] = []
    used = 0
    for line in markdown.splitlines(keepends=True):
        size = len(line.encode())
        if used + size > budget:
            break
        kept.append(line)
        used += size
    return "".join(kept).rstrip("\n") + note


def render_markdown(result: GateResult, *, limit: int = MARKDOWN_LIMIT) -> str:
    """A pull-request comment: the verdict, the failures, a table per metric, totals and the worst regressions.

    The first line says PASS or FAIL, the candidate experiment and the dataset version, e.g.
    ``## ❌ FAIL: rag-v2 (exp-17) on handbook@3``. Stays under ``limit`` bytes of UTF-8 whatever the dataset size.
    """
    candidate, comparison = result.candidate, result.comparison
    verdict = "✅ PASS" if result.passed else "❌ FAIL"
    lines = [
        f"## {verdict}: {_md(candidate.name, 100)} ({_md(candidate.id, 80)}) on "
        f"{_md(candidate.dataset, 100)}@{candidate.dataset_version}",
        "",
    ]
    if comparison is not None:
        base = comparison.baseline
        lines.append(f"Compared with baseline {_md(base.name, 100)} ({_md(base.id, 80)}).")
    else:
        lines.append("No baseline: thresholds only.")
    if result.failures:
        lines += ["", "**Failures**", ""]
        lines += [f"- {_md(failure, 400)}" for failure in result.failures[:_MAX_FAILURES]]
        if len(result.failures) > _MAX_FAILURES:
            lines.append(f"- … and {len(result.failures) - _MAX_FAILURES:,} more")
    rows = _rows(result)
    lines.append("")
    lines += _md_summary_table(rows, comparison is not None)
    note = _method_note(rows)
    if note:
        lines += ["", _md(note, 400)]
    lines += ["", "**Totals**", ""]
    totals = _totals_rows(candidate, comparison.baseline if comparison else None)
    if comparison is not None:
        lines += _md_table(["", "Candidate", "Baseline"], totals)
    else:
        lines += _md_table(["", "Candidate"], [(label, value) for label, value, _ in totals])
    lines += _md_worst(result, rows)
    return _md_fit("\n".join(lines) + "\n", limit)


# -- HTML ------------------------------------------------------------------------------------------------------------


def _h(text: object) -> str:
    """Data as HTML (or SVG) text or attribute value: ``& < > " '`` become entities, nothing else is needed."""
    return html.escape(str(text), quote=True)


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#212121;margin:0 auto;padding:1em 2em;
max-width:1200px}
h1{font-size:1.5em}h1 .pass{color:#2e7d32}h1 .fail{color:#c62828}h2{font-size:1.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ddd;padding:3px 7px;text-align:left;
vertical-align:top}th{background:#f5f5f5}td.n{text-align:right;font-variant-numeric:tabular-nums}
.worse{color:#c62828}.better{color:#2e7d32}.muted{color:#757575}
.items td{max-width:28em;overflow-wrap:anywhere;white-space:pre-wrap}
.plots{display:flex;flex-wrap:wrap;gap:1.5em}figure{margin:0}figcaption{color:#757575;font-size:.9em}
svg text{font:11px system-ui,sans-serif;fill:#424242}
"""


def _td(text: str, tone: str = "") -> str:
    """A cell of already escaped ``text``; ``tone`` is a CSS class (n: a number, worse, better)."""
    return f'<td class="{tone}">{text}</td>' if tone else f"<td>{text}</td>"


def _tone(comparison: MetricComparison | None) -> str:
    if comparison is None:
        return ""
    return "worse" if comparison.regressed else "better" if comparison.improved else ""


def _html_summary(rows: list[_Row], with_baseline: bool) -> list[str]:
    header = ["Metric", "Candidate"]
    if with_baseline:
        header += ["Baseline", "Δ [CI]", "p", "Verdict"]
    header += ["Threshold", "Errored"]
    out = ["<table><thead><tr>", *(f"<th>{_h(h)}</th>" for h in header), "</tr></thead><tbody>"]
    for row in rows:
        cells = [_td(_h(row.metric)), _td(_num(row.candidate.mean), "n")]
        if with_baseline:
            comparison = row.comparison
            cells += [
                _td(_num(row.baseline_mean), "n"),
                _td(_h(_difference(comparison)), "n"),
                _td(_p_value(comparison.p_value) if comparison and comparison.pairs else _DASH, "n"),
                _td(_h(_verdict(comparison)), _tone(comparison)),
            ]
        check = row.threshold
        tone = "" if check is None else "better" if check.passed else "worse"
        cells += [_td(_h(_threshold(check)), tone), _td(str(row.candidate.errors), "n")]
        out += ["<tr>", *cells, "</tr>"]
    out.append("</tbody></table>")
    return out


def _html_totals(candidate: ExperimentRecord, baseline: ExperimentRecord | None) -> list[str]:
    out = ["<table><thead><tr><th></th><th>Candidate</th>"]
    out.append("<th>Baseline</th></tr></thead><tbody>" if baseline is not None else "</tr></thead><tbody>")
    for label, cand, base in _totals_rows(candidate, baseline):
        cells = _td(_h(cand), "n") + (_td(_h(base), "n") if baseline is not None else "")
        out.append(f"<tr><th>{_h(label)}</th>{cells}</tr>")
    out.append("</tbody></table>")
    return out


def _range(values: Sequence[float]) -> tuple[float, float]:
    """[0, 1] when every value lies in it (a bounded score), else the data's range (widened when it is one point)."""
    if all(0.0 <= v <= 1.0 for v in values):
        return 0.0, 1.0
    low, high = min(values), max(values)
    return (low - 0.5, high + 0.5) if low == high else (low, high)


def _counts(values: Sequence[float], low: float, high: float) -> list[int]:
    counts = [0] * _BINS
    for value in values:
        counts[min(max(int((value - low) / (high - low) * _BINS), 0), _BINS - 1)] += 1
    return counts


def _histogram_svg(metric: str, candidate: Sequence[float], baseline: Sequence[float] | None) -> str:
    """Bars of the candidate's score distribution over the baseline's, same bins."""
    width, height, left, right, top, bottom = 420, 170, 34, 10, 26, 22
    plot_w, plot_h = width - left - right, height - top - bottom
    low, high = _range([*candidate, *(baseline or ())])
    series: list[tuple[str, Sequence[float], str]] = [("baseline", baseline, _BASELINE)] if baseline is not None else []
    series.append(("candidate", candidate, _CANDIDATE))
    counted = [(name, _counts(values, low, high), colour) for name, values, colour in series]
    peak = max(max(counts) for _, counts, _ in counted) or 1
    step = plot_w / _BINS
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{_h(f"Score distribution of {metric}")}">',
        f"<title>{_h(f'Score distribution of {metric}')}</title>",
    ]
    for name, counts, colour in counted:
        for i, count in enumerate(counts):
            if not count:
                continue
            bar = count / peak * plot_h
            edge = low + (high - low) * i / _BINS
            end = low + (high - low) * (i + 1) / _BINS
            parts.append(
                f'<rect x="{left + i * step + 1:.1f}" y="{top + plot_h - bar:.1f}" width="{step - 2:.1f}" '
                f'height="{bar:.1f}" fill="{colour}" fill-opacity="0.55">'
                f"<title>{_h(f'{name} {_num(edge)}–{_num(end)}: {count}')}</title></rect>"
            )
    axis_y = top + plot_h
    parts += [
        f'<line x1="{left}" y1="{axis_y}" x2="{left + plot_w}" y2="{axis_y}" stroke="#757575"/>',
        f'<text x="{left}" y="{axis_y + 15}">{_h(_num(low))}</text>',
        f'<text x="{left + plot_w / 2:.1f}" y="{axis_y + 15}" text-anchor="middle">{_h(_num((low + high) / 2))}</text>',
        f'<text x="{left + plot_w}" y="{axis_y + 15}" text-anchor="end">{_h(_num(high))}</text>',
        f'<text x="{left - 4}" y="{top + 4}" text-anchor="end">{peak}</text>',
        f'<text x="{left - 4}" y="{axis_y}" text-anchor="end">0</text>',
    ]
    x = left
    for name, values, colour in series:
        parts.append(f'<rect x="{x}" y="6" width="10" height="10" fill="{colour}" fill-opacity="0.55"/>')
        parts.append(f'<text x="{x + 14}" y="15">{_h(f"{name} (n={len(values)})")}</text>')
        x += 130
    parts.append("</svg>")
    return "".join(parts)


def _diff_svg(metric: str, higher_is_better: bool, pairs: Sequence[tuple[str, float, float]]) -> str:
    """Bars of candidate − baseline per example, sorted; worse in red, better in green.

    Past `_MAX_BARS` examples the bars are evenly spaced ranks of the sorted differences (the curve keeps its shape,
    the page its size).
    """
    width, height, left, right, top, bottom = 420, 170, 44, 10, 10, 22
    plot_w, plot_h = width - left - right, height - top - bottom
    ranked = sorted(pairs, key=lambda p: p[2] - p[1])
    n = len(ranked)
    picks = range(n) if n <= _MAX_BARS else [round(i * (n - 1) / (_MAX_BARS - 1)) for i in range(_MAX_BARS)]
    peak = max((abs(c - b) for _, b, c in ranked), default=0.0) or 1.0
    zero = top + plot_h / 2
    step = plot_w / len(picks)
    label = f"Per-example change in {metric} (candidate − baseline)"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{_h(label)}"><title>{_h(label)}</title>'
    ]
    for slot, index in enumerate(picks):
        example, base, cand = ranked[index]
        diff = cand - base
        if diff == 0:
            continue
        bar = abs(diff) / peak * plot_h / 2
        colour = _RED if _worsening(higher_is_better, base, cand) > 0 else _GREEN
        what = example if n <= _MAX_BARS else f"rank {index + 1} of {n}"
        parts.append(
            f'<rect x="{left + slot * step:.2f}" y="{zero - bar if diff > 0 else zero:.1f}" '
            f'width="{max(step - 0.5, 0.5):.2f}" height="{bar:.1f}" fill="{colour}">'
            f"<title>{_h(f'{what}: {_num(base)} → {_num(cand)} ({_signed(diff)})')}</title></rect>"
        )
    parts += [
        f'<line x1="{left}" y1="{zero}" x2="{left + plot_w}" y2="{zero}" stroke="#757575"/>',
        f'<text x="{left - 4}" y="{top + 8}" text-anchor="end">{_h(_signed(peak))}</text>',
        f'<text x="{left - 4}" y="{zero + 4}" text-anchor="end">0</text>',
        f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end">{_h(_signed(-peak))}</text>',
        f'<text x="{left}" y="{height - 6}">{_h(f"{n:,} examples, sorted by change")}</text>',
        "</svg>",
    ]
    return "".join(parts)


def _html_metric(result: GateResult, row: _Row) -> list[str]:
    candidate = list(result.candidate.values(row.metric).values())
    baseline = list(result.comparison.baseline.values(row.metric).values()) if result.comparison else None
    out = [f"<h2>{_h(row.metric)}</h2>", '<div class="plots">']
    if candidate or baseline:
        caption = "Score distribution" + (", candidate over baseline" if baseline is not None else "")
        out.append(f"<figure>{_histogram_svg(row.metric, candidate, baseline)}<figcaption>{_h(caption)}</figcaption>")
        out.append("</figure>")
    else:
        out.append('<p class="muted">No scored items.</p>')
    pairs = _paired(result, row.metric)
    if pairs:
        out.append(f"<figure>{_diff_svg(row.metric, row.higher_is_better, pairs)}")
        out.append("<figcaption>Candidate − baseline per example; red is worse, green better</figcaption></figure>")
    elif result.comparison is not None:
        out.append('<p class="muted">No example scored by both experiments.</p>')
    out.append("</div>")
    return out


def _value(item: ItemResult | None, metric: str) -> float | None:
    score = item.scores.get(metric) if item is not None else None
    return score.value if score is not None else None


def _change(item: ItemResult, base: ItemResult | None, scales: dict[str, float]) -> float:
    """How much an item's scores moved: the largest change relative to its metric's largest (so a length in words
    does not outweigh a score in [0, 1]); gaining or losing an error counts as infinite."""
    if base is None:
        return 0.0
    change = 0.0
    for metric, scale in scales.items():
        if metric not in item.scores or metric not in base.scores:
            continue  # a metric one of the runs did not have is not a change of this item
        cand, prior = _value(item, metric), _value(base, metric)
        if cand is None or prior is None:
            if (cand is None) != (prior is None):
                return math.inf
            continue
        change = max(change, abs(cand - prior) / scale)
    return change


def _scores_cell(item: ItemResult, base: ItemResult | None, metrics: Sequence[str], higher: dict[str, bool]) -> str:
    lines = []
    for metric in metrics:
        score = item.scores.get(metric)
        if score is None:
            continue
        if score.skipped:
            lines.append(f"{_h(metric)}: n/a ({_h(_clip(score.error or '', 300))})")
            continue
        if score.value is None:
            lines.append(f'<span class="worse">{_h(metric)}: error ({_h(_clip(score.error or "", 300))})</span>')
            continue
        prior = _value(base, metric)
        if prior is None or prior == score.value:
            lines.append(f"{_h(metric)}: {_num(score.value)}")
            continue
        tone = "worse" if _worsening(higher.get(metric, True), prior, score.value) > 0 else "better"
        lines.append(f'<span class="{tone}">{_h(metric)}: {_num(prior)} → {_num(score.value)}</span>')
    return "<br>".join(lines)


def _html_items(result: GateResult, rows: list[_Row], limit: int) -> list[str]:
    """The items, most changed first (without a baseline: errored first), capped at ``limit`` rows."""
    metrics = [row.metric for row in rows]
    higher = {row.metric: row.higher_is_better for row in rows}
    scales = {m: max((abs(c - b) for _, b, c in _paired(result, m)), default=0.0) or 1.0 for m in metrics}
    baseline = {i.example_id: i for i in result.comparison.baseline.items} if result.comparison else None
    items = result.candidate.items

    def errored(item: ItemResult) -> bool:
        return bool(item.error) or any(s.errored for s in item.scores.values())

    if baseline is not None:
        order = sorted(items, key=lambda i: _change(i, baseline.get(i.example_id), scales), reverse=True)
        heading = f"Items, most changed first ({min(len(items), limit):,} of {len(items):,})"
    else:
        order = sorted(items, key=errored, reverse=True)
        heading = f"Items, errored first ({min(len(items), limit):,} of {len(items):,})"
    header = ["Example", "Input", "Candidate output"]
    header += ["Baseline output"] if baseline is not None else []
    header += ["Scores", "Trace", "Error"]
    out = [f"<h2>{_h(heading)}</h2>", '<table class="items"><thead><tr>']
    out += [f"<th>{_h(h)}</th>" for h in header]
    out.append("</tr></thead><tbody>")
    for item in order[:limit]:
        base = baseline.get(item.example_id) if baseline is not None else None
        cells = [_h(item.example_id), _h(_clip(item.input, 400)), _h(_clip(item.output, 1200))]
        if baseline is not None:
            changed = base is not None and _change(item, base, scales) > 0
            cells.append(_h(_clip(base.output, 1200)) if changed and base is not None else _DASH)
        cells += [
            _scores_cell(item, base, metrics, higher),
            _h(item.trace_id) if item.trace_id else _DASH,
            f'<span class="worse">{_h(_clip(item.error, 600))}</span>' if item.error else "",
        ]
        out.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    out.append("</tbody></table>")
    if len(items) > limit:
        out.append(
            f'<p class="muted">{len(items) - limit:,} more items left out (the {limit:,} shown changed most).</p>'
        )
    return out


def render_html(result: GateResult, *, item_limit: int = ITEM_LIMIT) -> str:
    """One self-contained page: no JavaScript, no external CSS, fonts or images (inline ``<style>`` and SVG only).

    It holds the summary and totals tables, per metric a histogram of the scores (candidate over baseline) and a
    per-example diff plot, and the ``item_limit`` most changed items with both outputs for those whose score moved.
    A Content-Security-Policy forbids scripts too, should anything slip through escaping.
    """
    candidate, comparison = result.candidate, result.comparison
    verdict, tone = ("PASS", "pass") if result.passed else ("FAIL", "fail")
    title = f"{verdict}: {candidate.name} on {candidate.dataset}@{candidate.dataset_version}"
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_h(title)}</title><style>{_CSS}</style></head><body>",
        f'<h1><span class="{tone}">{verdict}</span>: {_h(candidate.name)} <span class="muted">({_h(candidate.id)})'
        f"</span> on {_h(candidate.dataset)}@{candidate.dataset_version}</h1>",
    ]
    if comparison is not None:
        base = comparison.baseline
        out.append(f'<p>Compared with baseline {_h(base.name)} <span class="muted">({_h(base.id)})</span>.</p>')
    else:
        out.append("<p>No baseline: thresholds only.</p>")
    if result.failures:
        out += ["<h2>Failures</h2><ul>", *(f"<li>{_h(_clip(f, 1000))}</li>" for f in result.failures), "</ul>"]
    rows = _rows(result)
    out += ["<h2>Metrics</h2>", *_html_summary(rows, comparison is not None)]
    note = _method_note(rows)
    if note:
        out.append(f'<p class="muted">{_h(note)}</p>')
    out += ["<h2>Totals</h2>", *_html_totals(candidate, comparison.baseline if comparison else None)]
    for row in rows:
        out += _html_metric(result, row)
    out += _html_items(result, rows, item_limit)
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# -- files -----------------------------------------------------------------------------------------------------------


def _write_atomic(path: Path, text: str) -> None:
    """Readers see the old file or the new one, never half of it; a failed write leaves no temporary behind."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", errors="replace") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)  # mkstemp makes it private; a report is for CI artifacts and colleagues
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_reports(result: GateResult, directory: Path) -> tuple[Path, Path]:
    """Write ``summary.md`` and ``report.html`` into ``directory`` (created if missing); returns their paths.

    Both are rendered before either is written, so a rendering error leaves the previous reports in place.
    """
    markdown, page = render_markdown(result), render_html(result)
    directory.mkdir(parents=True, exist_ok=True)
    summary, report = directory / "summary.md", directory / "report.html"
    _write_atomic(summary, markdown)
    _write_atomic(report, page)
    return summary, report
