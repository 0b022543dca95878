"""One self-contained HTML page per run: figures are embedded as base64 data URIs.

The page opens alone (moved, copied or mailed without its run folder) and
loads nothing from the network.
"""

from __future__ import annotations

import base64
import html
from importlib import resources
from pathlib import Path
from typing import Any

from cxrlab.report import present
from cxrlab.runio import atomic_write_text

#: The one stylesheet of every cxrlab page (run, compare, ensemble, study): ``page.css`` beside this module.
CSS = resources.files("cxrlab.report").joinpath("page.css").read_text(encoding="utf-8")


def esc(v: Any) -> str:
    """HTML-escaped text of any value."""
    return html.escape(str(v))


def fmt(v: Any, digits: int = 3) -> str:
    """A table cell: a number as :func:`cxrlab.report.present.value` writes it, escaped."""
    return esc(present.value(v, digits))


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


def page(title: str, body: list[str], subtitle: str = "") -> str:
    """A whole self-contained page: the one stylesheet, the title, a muted subtitle, ``body`` (HTML parts)."""
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>",
             "<link rel='icon' href='data:,'>",  # no favicon request (a missing-file error in browsers)
             f"<style>{CSS}</style></head><body><h1>{esc(title)}</h1>"]
    if subtitle:
        parts.append(f"<p class='muted'>{esc(subtitle)}</p>")
    return "\n".join([*parts, *body, "</body></html>"])


def write_report(path: Path, title: str, sections: list[tuple[str, str]], subtitle: str = "") -> Path:
    """Write an HTML page; ``sections`` are (heading, HTML body) pairs."""
    return atomic_write_text(path, page(title, [f"<h2>{esc(h)}</h2>{b}" for h, b in sections], subtitle))
