"""The one way cxrlab writes a number: values, CIs, p-values, differences, counts and shares.

Why: the terminal, the run page, the compare page, the study page and the model card each had
their own formatter, and one CI had three spellings.  Every reader now formats here, so a
reviewer sees ``0.812 [0.770, 0.851]`` on every page and ``p < 0.001`` under one rule.

All functions take plain numbers or an :class:`~cxrlab.evaluate.records.Estimate`; a missing
or undefined value (None, NaN) is ``n/a``.  Text, not HTML: pages escape it.
"""

from __future__ import annotations

from typing import Any

from cxrlab.evaluate.records import Estimate, finite

NA = "n/a"

#: Below this a p-value is written ``p < 0.001``.
P_FLOOR = 1e-3


def value(v: Any, digits: int = 3) -> str:
    """A number: floats to ``digits`` places, integers as they are, None / NaN as ``n/a``; other values as text."""
    if v is None:
        return NA
    if isinstance(v, Estimate):
        v = v.value
    if isinstance(v, bool) or not isinstance(v, int | float):
        return str(v)
    if isinstance(v, int):
        return str(v)
    return _fixed(v, digits) if finite(v) else NA


def _fixed(v: float, digits: int, signed: bool = False) -> str:
    """``v`` to ``digits`` places; a value that rounds to zero never keeps a minus sign (``-0.000``
    reads as a negative gap that is not there): ``0.000``, or ``+0.000`` when ``signed``."""
    text = f"{v:{'+' if signed else ''}.{digits}f}"
    if text.startswith("-") and not text.strip("-+0."):
        text = ("+" if signed else "") + text[1:]
    return text


def interval(low: Any, high: Any, digits: int = 3, signed: bool = False) -> str:
    """``[0.770, 0.851]`` (``n/a`` when either bound is missing)."""
    if not (finite(low) and finite(high)):
        return NA
    num = diff if signed else value
    return f"[{num(low, digits)}, {num(high, digits)}]"


def ci(v: Any, low: Any = None, high: Any = None, digits: int = 3) -> str:
    """``0.812 [0.770, 0.851]``: the one spelling of an estimate with its 95% CI.

    ``v`` may be an :class:`Estimate` (its bounds are used); without bounds the value alone.
    """
    return _with_ci(v, low, high, digits, signed=False)


def diff(v: Any, digits: int = 3) -> str:
    """A difference with its sign: ``+0.012``, ``-0.034``."""
    if isinstance(v, Estimate):
        v = v.value
    return _fixed(v, digits, signed=True) if finite(v) else NA


def diff_ci(v: Any, low: Any = None, high: Any = None, digits: int = 3) -> str:
    """``+0.012 [-0.010, +0.034]``: a difference with its 95% CI."""
    return _with_ci(v, low, high, digits, signed=True)


def _with_ci(v: Any, low: Any, high: Any, digits: int, signed: bool) -> str:
    """:func:`ci` and :func:`diff_ci` in one: they differ only in whether numbers carry a sign."""
    if isinstance(v, Estimate):
        v, low, high = v.value, v.low, v.high
    if not finite(v):
        return NA
    num = diff if signed else value
    if not (finite(low) and finite(high)):
        return num(v, digits)
    return f"{num(v, digits)} {interval(low, high, digits, signed=signed)}"


def pvalue(p: Any, resolution: Any = None) -> str:
    """A p-value, one rule: ``< 0.001`` below 0.001, else 3 significant digits (``0.0123``).

    Args:
        resolution: the smallest positive p a resampling test can give (1/B); a p below it only
            says ``< 1/B`` (``< 0.02 (1/50)`` for B = 50), never ``0``.
    """
    if not finite(p):
        return NA
    if finite(resolution) and p < resolution and resolution > P_FLOOR:
        return f"< {resolution:.3g} (1/{round(1 / resolution)})"
    if p < P_FLOOR:
        return f"< {P_FLOOR:g}"
    return f"{p:.3g}"


def p_text(p: Any, resolution: Any = None) -> str:
    """``p < 0.001``, ``p = 0.0123`` or ``p = n/a`` (:func:`pvalue` in a sentence)."""
    text = pvalue(p, resolution)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def percent(share: Any, digits: int = 1) -> str:
    """A share as a percentage: ``12.5%``."""
    return f"{_fixed(100 * share, digits)}%" if finite(share) else NA


def count_share(count: Any, share: Any, digits: int = 1) -> str:
    """A count with its share: ``12 (12.5%)``."""
    return f"{value(count)} ({percent(share, digits)})"


def setting(v: Any) -> str:
    """A configured value as it was typed (``0.0003``, ``1e-05``; ``{v:g}``), not rounded to 3 places."""
    return f"{v:g}" if isinstance(v, float) and finite(v) else value(v)


def published(v: Any) -> str:
    """A number as a paper printed it (up to 4 places, trailing zeros dropped)."""
    return f"{v:.4f}".rstrip("0").rstrip(".") if finite(v) else NA
