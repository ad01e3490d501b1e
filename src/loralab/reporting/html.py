"""The comparison report as one self-contained HTML file: no network at all (no external CSS, scripts or
fonts), the figures inlined as base64 data: URIs, every text html-escaped. Opens from disk or an email."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from loralab.files import write_text_atomically
from loralab.reporting.content import ReportContent

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; line-height: 1.5; color: #1d1d1f;
       max-width: 72rem; margin: 2rem auto; padding: 0 1rem; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
.table { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.9rem; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d0d0d7; padding: 0.3rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f0f0f5; }
tr.failed td { background: #fdecec; color: #8a1c1c; }
figure { margin: 1.5rem 0; }
img { max-width: 100%; height: auto; border: 1px solid #e5e5ea; }
figcaption { font-size: 0.9rem; color: #555; }
"""


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)


def _paragraphs(texts: list[str]) -> list[str]:
    return [f"<p>{_e(text)}</p>" for text in texts]


def _table(content: ReportContent) -> list[str]:
    failed = set(content.failed)
    lines = ['<div class="table"><table>', "<thead><tr>"]
    lines += [f"<th>{_e(cell)}</th>" for cell in content.header]
    lines += ["</tr></thead>", "<tbody>"]
    for index, row in enumerate(content.rows):
        cells = "".join(f"<td>{_e(cell)}</td>" for cell in row)
        lines.append(f'<tr class="failed">{cells}</tr>' if index in failed else f"<tr>{cells}</tr>")
    lines += ["</tbody>", "</table></div>"]
    return lines


def _figure(caption: str, png: Path) -> str:
    data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{_e(caption)}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def write_html(content: ReportContent, path: Path) -> None:
    """Write `content` as one HTML5 file at `path` (atomically), the figures' PNGs embedded in it."""
    lines = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(content.title)}</title>",
        f"<style>{STYLE}</style>",
        "</head>",
        "<body>",
        f"<h1>{_e(content.title)}</h1>",
        *_paragraphs(content.intro),
        *_table(content),
    ]
    if content.statements:
        lines += ["<h2>What differs and what does not</h2>", "<ul>"]
        lines += [f"<li>{_e(statement)}</li>" for statement in content.statements]
        lines.append("</ul>")
    lines += [_figure(caption, png) for caption, png in content.figures]
    lines += _paragraphs(content.notes)
    lines += ["</body>", "</html>", ""]
    write_text_atomically(Path(path), "\n".join(lines))
