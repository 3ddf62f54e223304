"""Blocks -> report.html: one self-contained file (inline CSS, figures as data: URIs, no
scripts, no external fonts or images), readable on a phone. Every string from the data goes
through html.escape."""

from __future__ import annotations

import base64
from html import escape as _escape

from .tables import Block, Code, Facts, Figure, Heading, Paragraph, Table, numeric_columns

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1100px; padding: 1rem; color: #1d2329; background: #fff;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; }
h1 { font-size: 1.6rem; margin: .2rem 0 1rem; }
h2 { font-size: 1.3rem; margin-top: 2.2rem; border-bottom: 1px solid #d8dee4; padding-bottom: .2rem; }
h3 { font-size: 1.08rem; margin-top: 1.6rem; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .15rem 1rem; margin: 0; }
dl.facts dt { font-weight: 600; color: #4a5560; }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
.scroll { overflow-x: auto; -webkit-overflow-scrolling: touch; margin: .6rem 0 1.2rem; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; font-size: .9rem; }
caption { caption-side: bottom; text-align: left; color: #5a6570; font-size: .85rem; padding-top: .35rem; }
th, td { border: 1px solid #d8dee4; padding: .3rem .6rem; white-space: nowrap; }
th { background: #f3f5f7; text-align: left; }
td.num { text-align: right; }
tbody tr:nth-child(even) { background: #fafbfc; }
figure { margin: 1rem 0 1.6rem; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid #eef1f4; }
figcaption { color: #5a6570; font-size: .85rem; margin-top: .3rem; }
details { margin: 1rem 0; }
pre { background: #f6f8fa; padding: .8rem; overflow-x: auto; font-size: .82rem; }
"""


def esc(text: object) -> str:
    """html.escape of any value's text, quotes included."""
    return _escape(str(text), quote=True)


def table(t: Table) -> str:
    right = numeric_columns(t)
    head = "".join(f'<th scope="col">{esc(h)}</th>' for h in t.headers)
    body = []
    for row in t.rows:
        cells = list(row) + [""] * (len(t.headers) - len(row))
        tds = "".join(f'<td class="num">{esc(c)}</td>' if j < len(right) and right[j] else f"<td>{esc(c)}</td>"
                      for j, c in enumerate(cells))
        body.append(f"<tr>{tds}</tr>")
    caption = f"<caption>{esc(t.caption)}</caption>" if t.caption else ""
    return (f'<div class="scroll"><table>{caption}<thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def figure(f: Figure) -> str:
    data = base64.b64encode(f.png).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{esc(f.caption)}" loading="lazy">'
            f"<figcaption>{esc(f.caption)}</figcaption></figure>")


def render_html(blocks: list[Block], title: str) -> str:
    """The whole HTML document.

    Example:
        >>> page = render_html([Heading("Report", 1)], title="digits")
    """
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            level = max(1, min(block.level, 6))
            parts.append(f"<h{level}>{esc(block.text)}</h{level}>")
        elif isinstance(block, Paragraph):
            parts.append(f"<p>{esc(block.text)}</p>")
        elif isinstance(block, Facts):
            items = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in block.pairs)
            parts.append(f'<dl class="facts">{items}</dl>')
        elif isinstance(block, Table):
            parts.append(table(block))
        elif isinstance(block, Figure):
            parts.append(figure(block))
        elif isinstance(block, Code):
            parts.append(f"<details><summary>{esc(block.title)}</summary><pre>{esc(block.text)}</pre></details>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
            f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            + "\n".join(parts) + "\n</body>\n</html>\n")
