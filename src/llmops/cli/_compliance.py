"""``llmops maturity`` and ``llmops evidence-pack``: the maturity assessment and the EU AI Act evidence pack, computed
from the platform's records."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from llmops.cli._common import console, open_platform
from llmops.governance import render_evidence_markdown
from llmops.governance._evidence import evidence_pack as build_evidence_pack
from llmops.governance._maturity import assess_maturity

__all__ = ["OutputFormat", "evidence_pack", "maturity"]


class OutputFormat(StrEnum):
    text = "text"
    json = "json"


def maturity(
    output_format: Annotated[
        OutputFormat, typer.Option("--format", help="text (Markdown) or json (one object on stdout)")
    ] = OutputFormat.text,
) -> None:
    """Level 0, 1 or 2 on prompt management, RAG pipeline, guardrails, evaluation, cost management and governance,
    with the evidence for each level and the next steps, computed from the platform's records."""
    with open_platform() as platform:
        report = assess_maturity(platform)
    if output_format is OutputFormat.json:
        typer.echo(json.dumps(report.to_dict(), ensure_ascii=False))
        return
    console.print(report.to_markdown(), markup=False, highlight=False)


def evidence_pack(
    output_dir: Annotated[
        Path, typer.Argument(help="where evidence-pack.md and evidence-pack.json are written")
    ] = Path("."),
) -> None:
    """Export the EU AI Act evidence pack (Markdown and JSON): inventories, change history, guardrails in force,
    evaluation results, incidents, oversight and retention, from the platform's records. Evidence, not legal advice."""
    with open_platform() as platform:
        pack = build_evidence_pack(platform)
    output_dir.mkdir(parents=True, exist_ok=True)
    markdown, data = output_dir / "evidence-pack.md", output_dir / "evidence-pack.json"
    markdown.write_text(render_evidence_markdown(pack), encoding="utf-8")
    data.write_text(json.dumps(pack, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    console.print(f"wrote {markdown} and {data}", highlight=False)
