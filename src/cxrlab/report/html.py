"""One self-contained HTML page per run: figures are embedded as base64 data URIs.

The page opens alone (moved, copied or mailed without its run folder) and
loads nothing from the network.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from cxrlab.runio import atomic_write_text

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222}
h1{font-size:1.6em;margin-bottom:.2em} h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
h3{font-size:1.02em;margin:1.2em 0 .3em}
table{border-collapse:collapse;margin:.5em 0} td,th{border:1px solid #ccc;padding:.3em .7em;text-align:right}
th{background:#f4f4f4} td:first-child,th:first-child{text-align:left}
table.kv td,table.kv th{text-align:left;vertical-align:top} table.kv td:first-child{white-space:nowrap;font-weight:600}
.figs{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start} .figs figure{margin:.4em 0;max-width:100%}
figure{margin:.8em 0} figcaption{color:#555;font-size:.9em}
img{max-width:100%;border:1px solid #eee} .muted{color:#777;font-size:.9em}
code{background:#f4f4f4;padding:0 .3em}
.box{border-left:6px solid;padding:.6em 1em;margin:.8em 0;border-radius:3px}
.box.bad{border-color:#c62828;background:#fdecea} .box.ok{border-color:#2e7d32;background:#edf7ed}
.box.unknown{border-color:#9e9e9e;background:#f5f5f5}
.box strong{display:block;margin-bottom:.2em}
"""


def esc(v: Any) -> str:
    """HTML-escaped text of any value."""
    return html.escape(str(v))


def fmt(v: Any, digits: int = 3) -> str:
    """A table cell: floats to ``digits`` places, NaN and None as ``n/a``, text escaped."""
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return "n/a" if v != v else f"{v:.{digits}f}"
    return esc(v)


def table(header: list[str], rows: list[list[Any]], cls: str = "") -> str:
    """A table; cells are formatted with :func:`fmt` unless they are :class:`Raw` HTML."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c if isinstance(c, Raw) else fmt(c)}</td>" for c in r) + "</tr>"
                   for r in rows)
    attr = f" class='{cls}'" if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class Raw(str):
    """A string that :func:`table` puts into a cell as HTML, unescaped."""


def box(kind: str, title: str, body: str) -> str:
    """A coloured notice: ``bad`` (red), ``ok`` (green) or ``unknown`` (grey); ``body`` is HTML."""
    return f"<div class='box {kind}'><strong>{esc(title)}</strong>{body}</div>"


def data_uri(path: Path) -> str:
    """A PNG file as a ``data:image/png;base64,...`` URI."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def figure(path: Path, alt: str, caption: str = "") -> str:
    """The PNG at ``path`` embedded in the page (a note instead when the file is missing)."""
    path = Path(path)
    if not path.is_file():
        return f"<p class='muted'>(figure {esc(path.name)} not drawn)</p>"
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f"<figure><img src='{data_uri(path)}' alt='{esc(alt)}'>{cap}</figure>"


def figures(items: list[tuple[Path, str, str]]) -> str:
    """Several figures side by side (wrapping): (path, alt text, caption) each."""
    return "<div class='figs'>" + "".join(figure(p, alt, cap) for p, alt, cap in items) + "</div>"


def write_report(path: Path, title: str, sections: list[tuple[str, str]], subtitle: str = "") -> Path:
    """Write an HTML page; ``sections`` are (heading, HTML body) pairs."""
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>",
             "<link rel='icon' href='data:,'>",  # no favicon request (a missing-file error in browsers)
             f"<style>{_CSS}</style></head><body><h1>{esc(title)}</h1>",
             f"<p class='muted'>{esc(subtitle)}</p>"]
    for heading, body in sections:
        parts.append(f"<h2>{esc(heading)}</h2>{body}")
    parts.append("</body></html>")
    return atomic_write_text(path, "\n".join(parts))
