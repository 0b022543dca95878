"""One label vocabulary: canonical finding names and how each source's columns map onto them.

Each dataset speaks its own label names (``nih14`` says ``Effusion``, ``chexpert`` says
``Pleural Effusion``).  Comparing a model trained on one with labels of another, or merging
several sources into one run, must go through names, never column positions (BenchMD maps by
position, so its names never match; torchxrayvision renames inside each reader and reports
nothing).  The shipped ``vocabulary.yaml`` lists the canonical names and, per source, each
column's canonical name and *kind*:

``exact``           the column has the canonical name
``renamed``         the same finding spelt otherwise (``Effusion`` -> ``Pleural Effusion``)
``synonym``         a dataset's own term close enough to compare (Kermany ``NORMAL`` ~ ``No Finding``)
``several-to-one``  one of several columns of the source that together are the finding (any positive)
``none``            no finding cxrlab compares across sources

A user file (``data.vocabulary: PATH``) has the same shape and extends or overrides the
shipped one; :attr:`Vocabulary.version` then names both, and a run records it.
Sources not listed (``csv``, ``folder``, ``npz``) map a column by name: a canonical name is
``exact``, a spelling under ``renamed:`` is ``renamed``, anything else ``none``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cxrlab.errors import CxrlabError

KINDS: tuple[str, ...] = ("exact", "renamed", "synonym", "several-to-one", "none")
"""Match kinds, strongest first: a match between two sources is as weak as its weaker side."""
_RANK = {k: i for i, k in enumerate(KINDS)}
_TOP_KEYS = {"version", "canonical", "renamed", "aliases", "sources"}


@dataclass(frozen=True)
class LabelMatch:
    """How one model label is found in a target's columns (:meth:`Vocabulary.match`).

    ``target_column`` is None when the target lacks the finding ("not evaluable", never
    negative); ``target_columns`` lists every target column merged into it (several-to-one:
    positive if any is, see :func:`combine`), else just ``target_column``.
    """

    model_label: str
    target_column: str | None
    canonical: str | None
    kind: str
    target_columns: tuple[str, ...] = ()

    @property
    def evaluable(self) -> bool:
        return self.target_column is not None

    def to_dict(self) -> dict[str, Any]:
        return {"model_label": self.model_label, "target_column": self.target_column,
                "canonical": self.canonical, "kind": self.kind, "target_columns": list(self.target_columns)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabelMatch:
        return cls(d["model_label"], d.get("target_column"), d.get("canonical"), d["kind"],
                   tuple(d.get("target_columns") or ()))


@dataclass
class Vocabulary:
    """Canonical names, other spellings, source aliases and per-source column maps."""

    version: str
    names: list[str]
    renamed: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    sources: dict[str, dict[str, tuple[str | None, str]]] = field(default_factory=dict)
    user_file: str | None = None

    @classmethod
    def load(cls, user_file: str | Path | None = None) -> Vocabulary:
        """The shipped vocabulary, extended or overridden by ``user_file`` (``data.vocabulary``)."""
        text = resources.files("cxrlab.data").joinpath("vocabulary.yaml").read_text(encoding="utf-8")
        vocab = cls(version="", names=[])
        vocab._add(yaml.safe_load(text), "cxrlab/data/vocabulary.yaml")
        if user_file is None or str(user_file) == "":
            return vocab
        path = Path(user_file)
        try:
            raw = path.read_text(encoding="utf-8")
            tree = yaml.safe_load(raw) or {}
        except FileNotFoundError:
            raise CxrlabError(f"{path}: vocabulary file not found (data.vocabulary)") from None
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            raise CxrlabError(f"{path}: cannot read the vocabulary file ({str(e).splitlines()[0]})") from None
        base = vocab.version
        vocab._add(tree, str(path))
        digest = hashlib.sha256(raw.encode("utf-8")).hexdigest()[:8]
        vocab.version = f"{base}+{tree.get('version', 'user')}:{digest}"
        vocab.user_file = str(path)
        return vocab

    def _add(self, tree: Any, origin: str) -> None:
        if not isinstance(tree, dict):
            raise CxrlabError(f"{origin}: a vocabulary file is a mapping (version, canonical, renamed, aliases, "
                              f"sources)")
        unknown = sorted(set(tree) - _TOP_KEYS)
        if unknown:
            raise CxrlabError(f"{origin}: unknown keys {unknown}; known: {', '.join(sorted(_TOP_KEYS))}")
        self.version = str(tree.get("version", self.version))
        for name in _as(tree.get("canonical") or [], list, origin, "canonical"):
            if str(name) not in self.names:
                self.names.append(str(name))
        for key in ("renamed", "aliases"):
            for k, v in _as(tree.get(key) or {}, dict, origin, key).items():
                getattr(self, key)[str(k)] = str(v)
        for spelling, name in self.renamed.items():
            if name not in self.names:
                raise CxrlabError(f"{origin}: renamed.{spelling}: {name!r} is not a canonical name")
        for source, columns in _as(tree.get("sources") or {}, dict, origin, "sources").items():
            table = self.sources.setdefault(str(source), {})
            for column, entry in _as(columns or {}, dict, origin, f"sources.{source}").items():
                table[str(column)] = self._entry(entry, origin, f"sources.{source}.{column}", str(column))

    def _entry(self, entry: Any, origin: str, where: str, column: str) -> tuple[str | None, str]:
        if isinstance(entry, str):
            name, kind = (column if entry == "exact" else None), entry
        elif isinstance(entry, dict) and set(entry) <= {"canonical", "kind"}:
            kind = str(entry.get("kind", "exact"))
            name = entry.get("canonical", column if kind == "exact" else None)
        else:
            raise CxrlabError(f"{origin}: {where}: expected a kind or {{canonical: NAME, kind: KIND}}, got {entry!r}")
        if kind not in KINDS:
            raise CxrlabError(f"{origin}: {where}: unknown kind {kind!r}; expected {', '.join(KINDS)}")
        if kind == "none":
            return None, "none"
        if name not in self.names:
            raise CxrlabError(f"{origin}: {where}: {name!r} is not a canonical name (add it under canonical:)")
        return str(name), kind

    def canonical(self, source: str, column: str) -> tuple[str | None, str]:
        """``(canonical name or None, kind)`` of ``column`` of ``source``."""
        table = self.sources.get(self.aliases.get(source, source), {})
        if column in table:
            return table[column]
        if column in self.names:
            return column, "exact"
        if column in self.renamed:
            return self.renamed[column], "renamed"
        return None, "none"

    def match(self, model_labels: list[str], model_source: str, target_source: str,
              target_columns: list[str]) -> tuple[list[LabelMatch], list[str]]:
        """Each model label's target column(s) by canonical name, and the target columns the model lacks.

        A model label whose finding the target lacks gets ``target_column=None`` (kind ``none``):
        shown as not evaluable, never scored as negative.  Several target columns of one finding
        give one ``several-to-one`` match listing them all.
        """
        target = {col: self.canonical(target_source, col) for col in target_columns}
        matches: list[LabelMatch] = []
        for label in model_labels:
            name, kind = self.canonical(model_source, label)
            cols = [c for c, (n, _) in target.items() if name is not None and n == name]
            if not cols:
                matches.append(LabelMatch(label, None, name, "none"))
                continue
            kinds = [kind, *(target[c][1] for c in cols)]
            if len(cols) > 1:
                kinds.append("several-to-one")
            weakest = max(kinds, key=_RANK.__getitem__)
            matches.append(LabelMatch(label, cols[0], name, weakest, tuple(cols)))
        have = {m.canonical for m in matches if m.evaluable}
        lacking = [c for c, (n, _) in target.items() if n is None or n not in have]
        return matches, lacking

    def record(self) -> dict[str, Any]:
        """What a run stores about the vocabulary it used (``model.json``)."""
        return {"version": self.version, "user_file": self.user_file}


def combine(values: np.ndarray) -> np.ndarray:
    """Several label columns (N, k) of one finding as one (N,): 1 if any is 1, else -1, else 0, else NaN."""
    v = np.asarray(values, dtype=np.float32)
    if v.ndim == 1:
        return v
    out = np.full(v.shape[0], np.nan, dtype=np.float32)
    for value in (0.0, -1.0, 1.0):  # later wins: positive beats uncertain beats negative beats unknown
        out[(v == value).any(axis=1)] = value
    return out


def canonical_columns(vocab: Vocabulary, source: str, columns: Iterable[str]) -> dict[str, list[str]]:
    """Canonical name -> the source's columns for it (columns of kind ``none`` are left out)."""
    out: dict[str, list[str]] = {}
    for col in columns:
        name, _ = vocab.canonical(source, col)
        if name is not None:
            out.setdefault(name, []).append(col)
    return out


def _as(value: Any, kind: type, origin: str, where: str) -> Any:
    if not isinstance(value, kind):
        raise CxrlabError(f"{origin}: {where}: expected a {'list' if kind is list else 'mapping'}, got {value!r}")
    return value
