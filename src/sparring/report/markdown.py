"""Blocks -> report.md. Figures become PNG files under figures/ linked relatively.

Text from the data is escaped so that it can neither break a table (| and newlines) nor inject
raw HTML (< > &) or links into renderers that allow them.
"""

from __future__ import annotations

import html
import re

from .tables import Block, Code, Facts, Figure, Heading, Paragraph, Table, numeric_columns

FIGURES_DIR = "figures"
_SPECIAL = re.compile(r"([\\`*\[\]|])")


def escape(text: object) -> str:
    """Escape a data string for markdown (inline, single line)."""
    one_line = " ".join(str(text).split())
    return _SPECIAL.sub(r"\\\1", html.escape(one_line, quote=False))


def table(t: Table) -> str:
    """A pipe table; numeric columns right-aligned, caption in italics below."""
    align = ["---:" if right else ":---" for right in numeric_columns(t)]
    lines = ["| " + " | ".join(escape(h) for h in t.headers) + " |", "| " + " | ".join(align) + " |"]
    for row in t.rows:
        cells = list(row) + [""] * (len(t.headers) - len(row))
        lines.append("| " + " | ".join(escape(c) for c in cells) + " |")
    if t.caption:
        lines += ["", f"*{escape(t.caption)}*"]
    return "\n".join(lines)


def _fence(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def render_markdown(blocks: list[Block]) -> tuple[str, dict[str, bytes]]:
    """The markdown text and the figure files it links, by path relative to the run folder.

    Example:
        >>> text, files = render_markdown([Heading("Report", 1), Paragraph("n = 10")])
    """
    parts: list[str] = []
    files: dict[str, bytes] = {}
    for block in blocks:
        if isinstance(block, Heading):
            parts.append("#" * max(1, min(block.level, 6)) + " " + escape(block.text))
        elif isinstance(block, Paragraph):
            parts.append(escape(block.text))
        elif isinstance(block, Facts):
            parts.append("\n".join(f"- **{escape(k)}**: {escape(v)}" for k, v in block.pairs))
        elif isinstance(block, Table):
            parts.append(table(block))
        elif isinstance(block, Figure):
            path = f"{FIGURES_DIR}/{block.name}"
            files[path] = block.png
            parts.append(f"![{escape(block.caption)}]({path})\n\n*{escape(block.caption)}*")
        elif isinstance(block, Code):
            fence = _fence(block.text)
            parts.append(f"<details><summary>{escape(block.title)}</summary>\n\n{fence}\n"
                         f"{block.text.rstrip()}\n{fence}\n\n</details>")
    return "\n\n".join(parts) + "\n", files
