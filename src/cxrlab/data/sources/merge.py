"""Several sources in one run (``data.sources``): one manifest, labels merged by name.

Each source is read as on its own (its own split, as it gives one or by patient), then its label
columns are renamed to canonical names through the :class:`~cxrlab.data.vocabulary.Vocabulary`
(``Effusion`` and ``Pleural Effusion`` become one column).  The run's labels are ``data.labels``
(any spelling the vocabulary knows) or the union of the sources' canonical names, in order of
first appearance.  A label a source does not have is NaN for its images and listed in
:attr:`Manifest.absent`, so the label policy keeps it NaN (no loss, not counted) instead of turning a
"not in this dataset" into a negative.

Image ids become paths relative to the sources' common folder (``nih/images/x.png``,
``site_b/img.png``): unique across sources, and ``root / image`` still opens the file.  Patient
ids are prefixed with the source's name (``nih14:17``): two datasets' patient 17 are two people.
The ``source`` column holds each source's name (``name``, default the source).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from cxrlab.data.manifest import Manifest
from cxrlab.data.splits import apply_split_file, save_split
from cxrlab.data.vocabulary import Vocabulary, canonical_columns, combine
from cxrlab.errors import CxrlabError

log = logging.getLogger(__name__)


@dataclass
class SourcePart:
    """One entry of ``data.sources`` (the config's ``SourceSpec`` without the config layer)."""

    source: str
    root: str
    options: dict[str, Any] = field(default_factory=dict)
    labels: list[str] | None = None
    name: str | None = None


def canonical_labels(vocab: Vocabulary, labels: list[str], sources: list[str]) -> list[str]:
    """``data.labels`` as canonical names: a canonical name as it is, else any source's spelling."""
    out = []
    for lab in labels:
        name = lab if lab in vocab.names else next(
            (n for n in (vocab.canonical(s, lab)[0] for s in sources) if n is not None), None)
        if name is None:
            raise CxrlabError(f"data.labels: {lab!r} is no finding of the vocabulary (version {vocab.version}) "
                              f"nor a column of {', '.join(sources)}; add it with data.vocabulary")
        out.append(name)
    return list(dict.fromkeys(out))


def _unique_names(parts: list[SourcePart]) -> list[str]:
    names: list[str] = []
    for p in parts:
        base = p.name or p.source
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def _prefixed(image: str, prefix: str) -> str:
    return image if Path(image).is_absolute() or prefix in ("", ".") else str(PurePosixPath(prefix) / image)


def merge_manifests(parts: list[tuple[str, str, Manifest]], vocab: Vocabulary,
                    labels: list[str] | None = None) -> Manifest:
    """One manifest from ``(name, source, manifest)`` triples, label columns merged by canonical name."""
    maps = {name: canonical_columns(vocab, source, m.labels) for name, source, m in parts}
    for (name, source, m) in parts:
        if m.task == "multiclass":
            raise CxrlabError(f"data.sources: {name} ({m.origin or m.root}) is multi-class ({', '.join(m.labels)}); "
                              "only multi-label and binary sources merge (one label column each)")
        for canon, cols in maps[name].items():
            if len(cols) > 1:
                log.info("%s: columns %s merged into %r (several-to-one: positive if any is)", name, cols, canon)
        dropped = [c for c in m.labels if vocab.canonical(source, c)[0] is None]
        if dropped:
            log.warning("%s: columns %s map to no canonical finding (vocabulary %s) and are left out", name,
                        dropped, vocab.version)
    union = list(dict.fromkeys(c for name, _, _ in parts for c in maps[name]))
    wanted = canonical_labels(vocab, labels, [s for _, s, _ in parts]) if labels else union
    nowhere = [lab for lab in wanted if lab not in union]
    if nowhere:
        raise CxrlabError(f"data.labels: {nowhere} are in none of the sources ({', '.join(n for n, _, _ in parts)})")
    roots = [str(Path(m.root).resolve()) for _, _, m in parts]
    common = Path(os.path.commonpath(roots))
    frames, boxes, sizes, absent = [], [], {}, {lab: [] for lab in wanted}
    for (name, source, m), root in zip(parts, roots, strict=True):
        prefix = os.path.relpath(root, common)
        f = m.frame
        out = f.drop(columns=[c for c in m.labels if c in f.columns]).copy()
        out["image"] = [_prefixed(i, prefix) for i in f["image"]]
        out["patient"] = name + ":" + f["patient"].astype(str)
        if "study" in out.columns:
            out["study"] = name + ":" + out["study"].astype(str)
        out["source"] = name
        for lab in wanted:
            cols = maps[name].get(lab)
            if cols:
                out[lab] = combine(f[cols].to_numpy(dtype=np.float32))
            else:
                out[lab] = np.float32(np.nan)
                absent[lab].append(name)
        frames.append(out)
        if m.boxes is not None and len(m.boxes):
            b = m.boxes.copy()
            b["image"] = [_prefixed(i, prefix) for i in b["image"]]
            b["label"] = [vocab.canonical(source, lab)[0] or lab for lab in b["label"]]
            boxes.append(b[b["label"].isin(wanted)])
        sizes.update({_prefixed(k, prefix): v for k, v in m.image_sizes.items()})
    frame = pd.concat(frames, ignore_index=True)
    for col in ("study", "view", "sex", "site"):
        if col in frame.columns:
            frame[col] = frame[col].fillna("").astype(str)
    methods = "; ".join(f"{name}: {m.split_method}" for name, _, m in parts)
    merged = Manifest(frame=frame, root=common, labels=wanted, task="multilabel",
                      boxes=pd.concat(boxes, ignore_index=True) if boxes else None, image_sizes=sizes,
                      split_method=f"each source's own: {methods}",
                      origin=" + ".join(m.origin or str(m.root) for _, _, m in parts),
                      absent={lab: names for lab, names in absent.items() if names})
    for lab, names in merged.absent.items():
        log.info("label %s: not in %s; masked there (NaN: no loss, not counted)", lab, ", ".join(names))
    return merged


def load_sources(parts: list[SourcePart], labels: list[str] | None, vocab: Vocabulary, *,
                 val_fraction: float = 0.1, fractions: dict[str, float] | None = None, seed: int = 0,
                 split_file: str | Path | None = None, task: str | None = None) -> Manifest:
    """Read each source with its own splits (:func:`cxrlab.data.sources.load_source`), then merge them."""
    from cxrlab.data.sources import as_task, load_source

    names = _unique_names(parts)
    loaded = []
    for p, name in zip(parts, names, strict=True):
        m = load_source(p.source, p.root, labels=p.labels, options=p.options, val_fraction=val_fraction,
                        fractions=fractions, seed=seed, split_file=None, task=None)
        loaded.append((name, p.source, m))
    merged = merge_manifests(loaded, vocab, labels)
    if split_file is not None:
        if Path(split_file).is_file():
            merged.frame = apply_split_file(split_file, merged.frame)
            merged.split_method = f"reused from the split file {split_file}"
        else:
            save_split(split_file, merged.frame)
    return as_task(merged, task, "data.sources") if task is not None else merged
