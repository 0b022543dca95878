"""A cross-site study's transfer: every cell scored on every site, and the matrix the report shows.

``study run`` trains one cell per site (``train=<site>``) and, with three or more sites, one per site
left out (``without=<site>``); then :func:`score_cells_on_sites` scores every finished cell on every
site's test split with ``cxrlab evaluate RUN --on SOURCE`` (:func:`~cxrlab.workflows.external.evaluate_external`:
the run's own preprocessing, labels mapped by name through the vocabulary, a duplicate check against the
cell's training images), written to ``RUN/external/<site>/``.  A cell's own site is scored the same way
(its test split of that site), so every entry of the matrix is computed alike and a column holds the
same images for every cell.

``study report`` reads those folders (:func:`transfer_result`) into a
:class:`~cxrlab.evaluate.records.TransferResult`: the matrix of macro AUCs with patient-bootstrap CIs,
and per site the model trained there against each model that never saw it, paired on the same images
(:mod:`cxrlab.evaluate.transfer`).  Nothing is written under ``runs/`` by the report.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from cxrlab.errors import CxrlabError
from cxrlab.evaluate.records import Estimate, ExternalResult, TransferEntry, TransferResult
from cxrlab.evaluate.transfer import own_vs_other, site_scores
from cxrlab.progress import say
from cxrlab.run import RunFolder
from cxrlab.studies.folder import StudyFolder
from cxrlab.studies.spec import StudySpec


def _current(run: RunFolder, site: str, source: str, root: str, n_boot: int) -> bool:
    files = run.external_files(site)
    if not (files["result"].is_file() and files["predictions"].is_file()):
        return False
    old = ExternalResult.read(files["result"])
    return old is not None and old.n_boot == n_boot and old.source == source and old.root == str(root)


def score_cells_on_sites(study: StudyFolder, cells: list[str], sites: dict[str, dict[str, Any]],
                         n_boot: int) -> list[str]:
    """Score each finished cell on each site's test split (``RUN/external/<site>/``); return ``cell@site`` of
    the pairs scored now.

    A pair whose scoring is current (same source, root and B) is skipped; retraining a cell removes its
    ``external/`` folder, so it is scored again.  A pair that stops (e.g. a site folder that moved) is named
    in one line and left out; the report lists it as missing.  The subgroup analysis of each pair is left
    to ``cxrlab evaluate RUN --on`` (the study's cells have their own, on their test splits).
    """
    from cxrlab.workflows.external import evaluate_external
    from cxrlab.workflows.study import run_finished

    done = []
    for cell in cells:
        run = RunFolder(study.run_path(cell))
        if not run_finished(run):
            continue
        seed = run.read_config().seed
        for site, s in sites.items():
            if _current(run, site, s["source"], s["root"], n_boot):
                continue
            say(f"cell {cell}: scoring on site {site} ({s['source']}, {s['root']})")
            try:
                evaluate_external(run.path, s["source"], s["root"], s.get("options") or {}, name=site,
                                  n_boot=n_boot, seed=seed, subgroup_analysis=False)
            except CxrlabError as e:
                say(f"cell {cell} on site {site}: not scored: {e}")
                continue
            done.append(f"{cell}@{site}")
    return done


def transfer_result(study: StudyFolder, spec: StudySpec, cells: list[str], n_boot: int) -> TransferResult:
    """The matrix (``cells`` x the study's sites) and the own-vs-other tests from the cells' external folders."""
    trained_on = {c.name: list(c.sites) for c in spec.grid() if c.name in cells}
    entries, missing, tables = [], [], {}
    for cell, on in trained_on.items():
        run = RunFolder(study.run_path(cell))
        labels = run.read_model_record().labels
        seed = run.read_config().seed if run.config_file.is_file() else 0
        for site in spec.sites:
            files = run.external_files(site)
            if not files["predictions"].is_file():
                missing.append(f"{cell}@{site}")
                continue
            table = pd.read_csv(files["predictions"])
            tables[cell, site] = (table, labels, seed)
            scores = site_scores(table, labels, n_boot, seed)
            res = ExternalResult.read(files["result"])
            dups = res.duplicates if res is not None else None
            entries.append(TransferEntry(cell, site, site in on, scores["n_images"], Estimate.from_dict(scores["macro"]),
                                         {k: Estimate.from_dict(v) for k, v in scores["per_label"].items()},
                                         None if dups is None else len(dups.leaked)))
    comparisons = []
    for site in spec.sites:
        own = next((c for c, on in trained_on.items() if on == [site]), None)
        if own is None or (own, site) not in tables:
            continue
        table, labels, seed = tables[own, site]
        for other, on in trained_on.items():
            if site in on or (other, site) not in tables:
                continue
            res = own_vs_other(table, tables[other, site][0], labels, own, other, n_boot, seed)
            comparisons.append({"site": site, "a": own, "b": other, **res})
    return TransferResult(list(spec.sites), trained_on, entries, comparisons, n_boot, missing)
