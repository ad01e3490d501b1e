"""What a comparison report says, as plain data: report.py fills it, html.py renders it. Imports nothing of
loralab."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ReportContent:
    """A report's text, table and figures. Every string is plain text (html.py escapes it)."""

    title: str
    intro: list[str]  # paragraphs before the table
    header: list[str]  # table header cells
    rows: list[list[str]]  # table cells, e.g. "0.857 [0.836, 0.878]", "12,345"
    failed: list[int]  # indices of rows that are failed runs (the row's cells say why)
    statements: list[str]  # significance statements in words, one per item
    figures: list[tuple[str, Path]]  # (caption, path of a PNG written beside the report)
    notes: list[str]  # paragraphs after the table
