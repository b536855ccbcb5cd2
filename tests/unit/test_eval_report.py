"""The CI gate's reports: the Markdown comment and the HTML page, from hand-built results with known values."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from llmops.evaluation._report import render_html, render_markdown, write_reports
from llmops.evaluation._results import (
    ExperimentComparison,
    ExperimentRecord,
    GateResult,
    ItemResult,
    MetricComparison,
    ThresholdCheck,
)
from llmops.evaluation._types import Score

SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'

# Per example: correctness (higher is better, 0/1), faithfulness (higher is better, [0, 1]) and length (lower is
# better, in words: unbounded), baseline then candidate. e8's candidate run errored (every metric errors).
BASELINE = {
    "e1": (1, 0.9, 50),
    "e2": (1, 0.8, 70),
    "e3": (0, 0.9, 45),
    "e4": (1, 1.0, 90),
    "e5": (0, 0.7, 30),
    "e6": (1, 0.9, 60),
    "e7": (1, 0.8, 60),
    "e8": (0, 1.0, 50),
}
CANDIDATE: dict[str, tuple[float, float, float] | None] = {
    "e1": (1, 0.5, 40),  # faithfulness -0.4
    "e2": (1, 0.6, 55),  # -0.2
    "e3": (1, 0.3, 30),  # -0.6, the worst
    "e4": (1, 0.9, 80),  # -0.1
    "e5": (0, 0.65, 20),  # -0.05: sixth worst, left out of the top five
    "e6": (1, 0.6, 45),  # -0.3
    "e7": (1, 0.8, 60),  # unchanged on every metric
    "e8": None,
}
METRICS = ("correctness", "faithfulness", "length")
INPUTS = {"e2": "What is 2|3?\nSecond line <b>bold</b> @octocat"}
OUTPUTS = {"e3": SCRIPT, "e6": IMG}


def _when() -> datetime:
    return datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def _record(ident: str, name: str, items: list[ItemResult], dataset: str = "handbook") -> ExperimentRecord:
    return ExperimentRecord(
        id=ident,
        name=name,
        dataset=dataset,
        dataset_version=3,
        config={},
        config_hash="h",
        status="finished",
        created_at=_when(),
        finished_at=_when(),
        items=items,
        directions={"correctness": True, "faithfulness": True, "length": False},
    )


def _item(example: str, values: tuple[float, ...] | None, *, output: str, **extra: Any) -> ItemResult:
    if values is None:
        scores = {m: Score.failed(m, "the system errored") for m in METRICS}
    else:
        scores = {m: Score(m, float(v)) for m, v in zip(METRICS, values, strict=True)}
    return ItemResult(example, INPUTS.get(example, f"question {example}"), output, scores, **extra)


def _candidate(name: str = "rag-v2", ident: str = "exp-17", dataset: str = "handbook") -> ExperimentRecord:
    items = []
    for example, values in CANDIDATE.items():
        if values is None:
            items.append(_item(example, None, output="", error="provider timeout", trace_id="t-e8"))
            continue
        items.append(
            _item(
                example,
                values,
                output=OUTPUTS.get(example, f"new answer {example}"),
                trace_id=f"t-{example}",
                latency_ms=100.0 * int(example[1:]),
                cost_usd=0.001,
                input_tokens=100,
                output_tokens=20,
                cached=example in ("e4", "e5"),
            )
        )
    return _record(ident, name, items, dataset)


def _baseline() -> ExperimentRecord:
    items = [_item(e, v, output=f"old answer {e}", latency_ms=50.0) for e, v in BASELINE.items()]
    return _record("exp-9", "rag-v1", items)


def _comparison(
    metric: str, higher: bool, base: float, cand: float, diff: float, ci: tuple[float, float], p: float
) -> MetricComparison:
    return MetricComparison(metric, higher, 7, base, cand, diff, ci[0], ci[1], p, 0.05, "Wilcoxon signed-rank")


def _gate(
    *, baseline: bool = True, failures: list[str] | None = None, candidate: ExperimentRecord | None = None
) -> GateResult:
    candidate = candidate or _candidate()
    comparison = None
    if baseline:
        comparison = ExperimentComparison(
            _baseline(),
            candidate,
            [
                _comparison("correctness", True, 0.714, 0.857, 0.143, (-0.143, 0.429), 0.32),
                _comparison("faithfulness", True, 0.857, 0.621, -0.236, (-0.4, -0.09), 0.012),
                _comparison("length", False, 57.857, 47.143, -10.714, (-14.3, -7.1), 0.008),
            ],
        )
    thresholds = [
        ThresholdCheck("correctness", 0.7, 0.857, True),
        ThresholdCheck("faithfulness", 0.8, 0.621, True),
    ]
    if failures is None:
        failures = ["faithfulness: mean 0.621 is below 0.800", "faithfulness regressed against rag-v1 (p=0.012)"]
    return GateResult(candidate, thresholds, comparison, 0.1, failures)


# -- Markdown --------------------------------------------------------------------------------------------------------


def _cells(line: str) -> list[str]:
    """A Markdown table row's cells (escaped pipes stay inside their cell)."""
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]


def _row(markdown: str, first_cell: str) -> list[str]:
    rows = [_cells(line) for line in markdown.splitlines() if line.startswith("|")]
    matches = [cells for cells in rows if cells and cells[0] == first_cell]
    assert len(matches) == 1, matches
    return matches[0]


def test_markdown_first_line_says_fail_with_the_experiment_and_dataset_version() -> None:
    markdown = render_markdown(_gate())
    assert markdown.splitlines()[0] == "## ❌ FAIL: rag-v2 (exp-17) on handbook@3"
    assert "- faithfulness: mean 0.621 is below 0.800" in markdown
    assert "Compared with baseline rag-v1 (exp-9)." in markdown


def test_markdown_first_line_says_pass_without_failures() -> None:
    markdown = render_markdown(_gate(failures=[]))
    assert markdown.splitlines()[0] == "## ✅ PASS: rag-v2 (exp-17) on handbook@3"
    assert "**Failures**" not in markdown


def test_markdown_metric_table_holds_means_difference_p_verdict_threshold_and_errors() -> None:
    markdown = render_markdown(_gate())
    header = _row(markdown, "Metric")
    assert header == ["Metric", "Candidate", "Baseline", "Δ [CI]", "p", "Verdict", "Threshold", "Errored"]
    # The candidate's mean is over its 7 scored items (e8's error is counted, not averaged); the baseline's is the
    # comparison's, over the 7 examples both scored (the baseline's own mean over 8 is 0.875).
    assert _row(markdown, "faithfulness") == [
        "faithfulness", "0.621", "0.857", "-0.236 [-0.400, -0.090]", "0.012", "▼ regressed", "≥ 0.800 ✗", "1",
    ]  # fmt: skip
    assert _row(markdown, "correctness") == [
        "correctness", "0.857", "0.714", "+0.143 [-0.143, +0.429]", "0.320", "= no significant change",
        "≥ 0.700 ✓", "1",
    ]  # fmt: skip
    assert "with Δ's 95% bootstrap confidence interval; p from the Wilcoxon signed-rank test." in markdown
    # Lower is better: a significant drop in length is an improvement; there is no threshold on it.
    assert _row(markdown, "length") == [
        "length", "47.1", "57.9", "-10.7 [-14.3, -7.1]", "0.008", "▲ improved", "—", "1",
    ]  # fmt: skip


def test_markdown_totals() -> None:
    markdown = render_markdown(_gate())
    assert _row(markdown, "Items") == ["Items", "8", "8"]
    assert _row(markdown, "Errored items") == ["Errored items", "1", "0"]
    assert _row(markdown, "Cached items") == ["Cached items", "2", "0"]
    assert _row(markdown, "Cost") == ["Cost", "$0.0070", "$0.0000"]
    assert _row(markdown, "Tokens") == ["Tokens", "700 in / 140 out", "0 in / 0 out"]
    assert _row(markdown, "Latency p50") == ["Latency p50", "400 ms", "50 ms"]


def test_markdown_lists_the_five_items_that_got_worse_the_most_per_regressed_metric() -> None:
    markdown = render_markdown(_gate())
    assert "### ▼ faithfulness: the items that got worse the most" in markdown
    assert "### ▼ correctness" not in markdown and "### ▼ length" not in markdown
    section = markdown.split("### ▼ faithfulness")[1]
    rows = [_cells(line) for line in section.splitlines() if line.startswith("| e")]
    assert [(r[0], r[2]) for r in rows] == [
        ("e3", "0.900 → 0.300"),
        ("e1", "0.900 → 0.500"),
        ("e6", "0.900 → 0.600"),
        ("e2", "0.800 → 0.600"),
        ("e4", "1.000 → 0.900"),
    ]
    assert rows[0][1] == "question e3"


def test_markdown_escapes_pipes_newlines_html_and_mentions_in_cells() -> None:
    markdown = render_markdown(_gate())
    e2 = next(line for line in markdown.splitlines() if line.startswith("| e2 |"))
    assert e2 == "| e2 | What is 2\\|3? Second line &lt;b&gt;bold&lt;/b&gt; @\u2060octocat | 0.800 → 0.600 |"
    assert len(_cells(e2)) == 3
    hostile = _candidate(name="a|b\n# heading <img src=x>", ident="`id`", dataset="*data*")
    first = render_markdown(_gate(candidate=hostile)).splitlines()[0]
    assert first == "## ❌ FAIL: a\\|b \\# heading &lt;img src=x&gt; (\\`id\\`) on \\*data\\*@3"


def test_markdown_without_baseline_has_thresholds_only() -> None:
    markdown = render_markdown(_gate(baseline=False))
    assert _row(markdown, "Metric") == ["Metric", "Candidate", "Threshold", "Errored"]
    assert _row(markdown, "faithfulness") == ["faithfulness", "0.621", "≥ 0.800 ✗", "1"]
    assert _row(markdown, "Items") == ["Items", "8"]
    assert "No baseline: thresholds only." in markdown
    assert "Δ" not in markdown and "###" not in markdown


def test_a_metric_nothing_scored_shows_a_dash_and_fails_its_threshold() -> None:
    candidate = _candidate()
    for item in candidate.items:
        item.scores["judge"] = Score.failed("judge", "unparseable judge output")
    gate = GateResult(candidate, [ThresholdCheck("judge", 0.5, None, True)], None, 0.1, ["judge: no scored item"])
    markdown = render_markdown(gate)
    assert _row(markdown, "judge") == ["judge", "—", "≥ 0.500 ✗", "8"]
    page = render_html(gate)
    assert "No scored items." in page


def test_markdown_stays_under_its_limit_whatever_the_size() -> None:
    items_base, items_cand, comparisons = [], [], []
    metrics = [f"metric-{m}-" + "z" * 60 for m in range(60)]
    for i in range(100):
        text = f"question {i} " + "|" * 500  # each pipe doubles when escaped
        items_base.append(ItemResult(f"e{i}", text, "old", {m: Score(m, 1.0) for m in metrics}))
        items_cand.append(ItemResult(f"e{i}", text, "new", {m: Score(m, i / 100) for m in metrics}))
    for m in metrics:
        comparisons.append(MetricComparison(m, True, 100, 1.0, 0.5, -0.5, -0.6, -0.4, 0.0001, 0.05, "t"))
    candidate = _record("c", "big", items_cand)
    comparison = ExperimentComparison(_record("b", "base", items_base), candidate, comparisons)
    gate = GateResult(candidate, [], comparison, 0.1, ["a failure " + "y" * 2000] * 500)
    markdown = render_markdown(gate)
    assert len(markdown.encode()) <= 60_000
    assert markdown.endswith("_Truncated to fit a comment: the full report is in report.html._\n")
    assert "- … and 450 more" in markdown
    assert markdown.startswith("## ❌ FAIL: big (c) on handbook@3\n")
    assert "Truncated" not in render_markdown(_gate())


# -- HTML ------------------------------------------------------------------------------------------------------------


class _Page(HTMLParser):
    """Every tag, the text, and the SVG charts (label, bars with fill and tooltip) of a page; checks nesting."""

    VOID = frozenset({"meta", "br", "link", "img", "input", "hr", "wbr", "area", "base", "col", "embed", "source"})

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.nesting_errors: list[str] = []
        self.charts: list[tuple[str, list[dict[str, str]]]] = []
        self.rows: list[list[str]] = []
        self.feed(page)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._open(tag, attrs)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._open(tag, attrs)

    def _open(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.tags.append((tag, values))
        if tag == "svg":
            self.charts.append((values.get("aria-label") or "", []))
        elif tag == "rect" and self.charts:
            self.charts[-1][1].append({"fill": values.get("fill") or "", "title": ""})
        elif tag == "tr":
            self.rows.append([])
        elif tag == "td" and self.rows:
            self.rows[-1].append("")

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.nesting_errors.append(f"</{tag}> closes {self.stack[-1:]}")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self.stack[-2:] == ["rect", "title"]:
            self.charts[-1][1][-1]["title"] += data
        if "td" in self.stack and self.rows and self.rows[-1]:
            self.rows[-1][-1] += data

    def chart(self, label_start: str) -> list[dict[str, str]]:
        matches = [bars for label, bars in self.charts if label.startswith(label_start)]
        assert len(matches) == 1, [label for label, _ in self.charts]
        return matches[0]


def test_html_is_self_contained_well_formed_and_has_a_chart_per_metric() -> None:
    page = _Page(render_html(_gate()))
    assert page.nesting_errors == [] and page.stack == []
    names = {tag for tag, _ in page.tags}
    assert "script" not in names and "link" not in names and "img" not in names and "iframe" not in names
    for _, attrs in page.tags:
        assert not {"src", "href"} & set(attrs)  # nothing fetched
        assert not any(a.startswith("on") for a in attrs)
    assert len(page.charts) == 6  # a histogram and a diff plot per metric
    text = "".join(page.text)
    assert "FAIL" in text and "rag-v2" in text and "handbook@3" in text


def test_html_histograms_use_ten_bins_on_zero_one_for_bounded_metrics_and_the_data_range_otherwise() -> None:
    page = _Page(render_html(_gate()))
    correctness = [bar["title"] for bar in page.chart("Score distribution of correctness")]
    assert "candidate 0.000–0.100: 1" in correctness and "candidate 0.900–1.000: 6" in correctness
    assert "baseline 0.000–0.100: 3" in correctness and "baseline 0.900–1.000: 5" in correctness
    # length spans 20..90 words over both runs: bins of 7; 55 and 60 share the sixth.
    length = [bar["title"] for bar in page.chart("Score distribution of length") if bar["title"]]  # not the legend
    assert [t for t in length if t.startswith("candidate")] == [
        "candidate 20.0–27.0: 1",
        "candidate 27.0–34.0: 1",
        "candidate 34.0–41.0: 1",
        "candidate 41.0–48.0: 1",
        "candidate 55.0–62.0: 2",
        "candidate 76.0–83.0: 1",
    ]
    assert "baseline 83.0–90.0: 1" in length  # the maximum falls in the last bin


def test_html_diff_plots_draw_regressions_in_red_in_the_metrics_direction() -> None:
    page = _Page(render_html(_gate()))
    faithfulness = page.chart("Per-example change in faithfulness")
    assert [bar["fill"] for bar in faithfulness] == ["#c62828"] * 6  # e7 did not change, e8 has no pair
    assert faithfulness[0]["title"] == "e3: 0.900 → 0.300 (-0.600)"  # sorted: the largest drop first
    assert [bar["fill"] for bar in page.chart("Per-example change in correctness")] == ["#2e7d32"]
    # length is lower-is-better: every drop is an improvement.
    assert {bar["fill"] for bar in page.chart("Per-example change in length")} == {"#2e7d32"}


def _items(page: _Page) -> list[list[str]]:
    """The per-item table's rows (the other tables' first cells are metric names and numbers)."""
    return [cells for cells in page.rows if cells and re.fullmatch(r"e\d+", cells[0])]


def test_html_item_table_shows_both_outputs_for_changed_items_and_errors() -> None:
    page = _Page(render_html(_gate()))
    rows = {cells[0]: cells for cells in _items(page)}
    assert rows["e3"][2] == SCRIPT and rows["e3"][3] == "old answer e3"
    assert "faithfulness: 0.900 → 0.300" in rows["e3"][4] and rows["e3"][5] == "t-e3"
    assert rows["e7"][3] == "—"  # nothing changed: no baseline output to compare
    assert rows["e8"][6] == "provider timeout" and "faithfulness: error (the system errored)" in rows["e8"][4]
    order = [cells[0] for cells in _items(page)]
    assert order[0] == "e8" and order[-1] == "e7"  # gaining an error is the largest change


def test_hostile_data_appears_as_text_in_html_and_svg() -> None:
    candidate = _candidate(name=SCRIPT, ident=IMG, dataset="<iframe src=//evil>")
    for item in candidate.items:
        item.scores[IMG] = Score(IMG, 0.5)
        item.trace_id = SCRIPT
    candidate.items[0].example_id = "<svg onload=alert(1)>"
    candidate.items[1].error = IMG
    gate = _gate(candidate=candidate, failures=[SCRIPT])
    source = render_html(gate)
    assert "<script" not in source.lower() and "<img" not in source.lower() and "<iframe" not in source.lower()
    page = _Page(source)
    assert page.nesting_errors == [] and page.stack == []
    allowed = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "span", "ul", "li", "table"}
    allowed |= {"thead", "tbody", "tr", "th", "td", "br", "div", "figure", "figcaption", "svg", "rect", "line", "text"}
    assert {tag for tag, _ in page.tags} <= allowed
    assert (
        sum(tag == "svg" for tag, _ in page.tags) == 7
    )  # and the hostile metric's histogram (no diff plot: no comparison)
    assert not any(a.startswith("on") for _, attrs in page.tags for a in attrs)
    text = "".join(page.text)
    assert SCRIPT in text and IMG in text and "<svg onload=alert(1)>" in text and "<iframe src=//evil>" in text
    assert f"Score distribution of {IMG}" in {label for label, _ in page.charts}  # an SVG attribute, escaped


def test_html_caps_the_item_table_on_a_thousand_items() -> None:
    base, cand = [], []
    for i in range(1000):
        base.append(ItemResult(f"e{i}", f"q{i}", "old " * 50, {"m": Score("m", 0.0)}))
        cand.append(ItemResult(f"e{i}", f"q{i}", "new " * 50, {"m": Score("m", i / 1000)}))  # e999 changed most
    candidate = _record("c", "big", cand)
    comparison = MetricComparison("m", True, 1000, 0.0, 0.4995, 0.4995, 0.48, 0.52, 0.0001, 0.05, "t")
    gate = GateResult(candidate, [], ExperimentComparison(_record("b", "base", base), candidate, [comparison]), 0.1)
    source = render_html(gate)
    page = _Page(source)
    order = [cells[0] for cells in _items(page)]
    assert len(order) == 200 and order[:2] == ["e999", "e998"] and order[-1] == "e800"
    assert "800 more items left out" in "".join(page.text)
    assert len(page.chart("Per-example change in m")) == 149  # 150 sampled ranks; the lowest did not change
    assert len(source.encode()) < 250_000


def test_html_without_baseline_has_histograms_but_no_diff_plots() -> None:
    page = _Page(render_html(_gate(baseline=False)))
    assert page.nesting_errors == []
    assert [label.split(" of ")[0] for label, _ in page.charts] == ["Score distribution"] * 3
    text = "".join(page.text)
    assert "No baseline: thresholds only." in text and "Baseline output" not in text
    assert _items(page)[0][0] == "e8"  # errored first


# -- files -----------------------------------------------------------------------------------------------------------


def test_write_reports_writes_both_files_atomically(tmp_path: Path) -> None:
    summary, report = write_reports(_gate(), tmp_path / "reports")
    assert summary == tmp_path / "reports" / "summary.md" and report == tmp_path / "reports" / "report.html"
    assert summary.read_text(encoding="utf-8").startswith("## ❌ FAIL")
    assert report.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["report.html", "summary.md"]


def test_a_failed_write_leaves_the_previous_report_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_reports(_gate(failures=[]), tmp_path)
    real = os.replace

    def failing(source: str, target: Path) -> None:
        if Path(target).name == "report.html":
            raise OSError("disk full")
        real(source, target)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(OSError, match="disk full"):
        write_reports(_gate(), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "summary.md"]
    assert "PASS" in (tmp_path / "report.html").read_text(encoding="utf-8")
