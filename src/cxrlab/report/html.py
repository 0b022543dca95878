"""One self-contained-enough HTML report per run (figures are files next to it)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from cxrlab.runio import atomic_write_text

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222}
h1{font-size:1.6em;margin-bottom:.2em} h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0} td,th{border:1px solid #ccc;padding:.3em .7em;text-align:right}
th{background:#f4f4f4} td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #eee} .muted{color:#777;font-size:.9em}
code{background:#f4f4f4;padding:0 .3em}
"""


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return "n/a" if v != v else f"{v:.3f}"
    return html.escape(str(v))


def table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_report(path: Path, title: str, sections: list[tuple[str, str]], subtitle: str = "") -> Path:
    """Write ``report.html``; ``sections`` are (heading, HTML body) pairs."""
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>",
             f"<p class='muted'>{html.escape(subtitle)}</p>"]
    for heading, body in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>{body}")
    parts.append("</body></html>")
    return atomic_write_text(path, "\n".join(parts))


def figure(rel: str, alt: str) -> str:
    return f"<p><img src='{html.escape(rel)}' alt='{html.escape(alt)}'></p>"
