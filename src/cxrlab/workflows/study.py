"""``cxrlab study run``: every cell of a study as a normal run, resumable, locally or on SLURM.

Each cell is a run folder under ``studies/<name>/runs/<cell>``.  A cell whose
resolved config is unchanged and whose run finished is skipped; an unfinished
one (killed, even by ``kill -9``, or stopped by a full disk after writing only
part of its files) is resumed from its last epoch; a cell whose config changed
is re-run from scratch, never mixed with the old one.  SLURM job arrays go
through submitit (its local executor runs the same path on one machine).
Before any cell trains, the study folder gets ``preset.yaml`` (the study file
as given) and ``study.yaml`` (what runs: every cell's resolved config and the
command line verbatim).  After the cells, ``study run`` makes the post-step
cells (ensembles, evaluated with the study's B) and audits every trained cell
where the study has masks (:func:`run_audits`: each cell's lung-energy share,
``cxrlab audit``) and analyses each cell's patient groups where its predictions carry sex or age
(:func:`run_subgroups`, ``cxrlab subgroups``); the study report is written at the end (:mod:`.study_report`, which only reads the run folders).  Every
name in the folder comes from :class:`~cxrlab.studies.folder.StudyFolder`.

A cell's config is a tree: the base recipe with the study's ``recipe``, then
the phantom form's data and overrides, then the cell's own keys, then the
phantom form's per-cell keys, then the command line (merged with
:func:`~cxrlab.config.merge_trees`; a value such as a data root is never
re-parsed as YAML on the way).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cxrlab.config import ExperimentConfig, build_config, merge_trees, parse_overrides, replace_keys
from cxrlab.data.workers import set_parent_death_signal
from cxrlab.errors import CxrlabError
from cxrlab.locks import FolderLock
from cxrlab.progress import make_progress, say
from cxrlab.run import RunFolder
from cxrlab.studies.folder import StudyFolder
from cxrlab.studies.spec import StudySpec, load_study
from cxrlab.workflows.experiment import run_experiment


@dataclass
class PlannedCell:
    name: str
    cfg: ExperimentConfig
    status: str  # done | partial | changed | new

    @property
    def run(self) -> RunFolder:
        return RunFolder(Path(self.cfg.runs_dir) / self.cfg.name)


@dataclass
class StudyPlan:
    spec: StudySpec
    study: StudyFolder
    cells: list[PlannedCell]
    baseline: str
    phantom: bool
    overrides: list[str] = field(default_factory=list)
    """The command line's ``key=value`` overrides, verbatim (they win over the study and its phantom form)."""
    root: str | None = None
    source: str = ""
    """The study file or preset name the plan was made from."""
    masks: str | None = None
    """The mask spec every trained cell is audited against (``--masks``, the study's ``audit.masks``, or the
    phantom form's own masks); None: the cells are not audited and the report says so."""
    sites: dict[str, dict[str, Any]] = field(default_factory=dict)
    """A cross-site study's datasets: site -> ``source``, ``root``, ``options`` (what every cell is scored on)."""

    @property
    def folder(self) -> Path:
        """The study folder's path (``plan.study`` names its files)."""
        return self.study.path


def run_finished(run: RunFolder) -> bool:
    """True when the cell's training ran to its end (:meth:`RunFolder.finished`: model.json, best weights,
    summary.json, chosen thresholds) and its test predictions, which the report reads, are there.

    ``summary.json`` alone is not enough: a full disk can leave it without the rest.
    """
    return run.finished() and run.has_predictions("test")


def cell_status(run: RunFolder, cfg: ExperimentConfig) -> str:
    """``done`` (finished, same config), ``partial`` (same config, unfinished), ``changed`` or ``new``.

    Finished means :func:`run_finished` (every file a run ends with), not only ``summary.json``.
    """
    if not run.config_file.is_file():
        return "changed" if run.path.exists() else "new"
    old = run.read_config().model_dump(mode="json")
    new = cfg.model_dump(mode="json")
    old.pop("task", None)  # the data source may decide the task; it is not a setting of the cell
    new.pop("task", None)
    if old != new:
        return "changed"
    return "done" if run_finished(run) else "partial"


def plan_study(ref: str | Path, root: str | Path | list[str] | None = None, overrides: list[str] | None = None,
               phantom: bool = False, out: str | Path = "studies", masks: str | Path | None = None) -> StudyPlan:
    """Resolve every cell's config and status (nothing is trained; the phantom form's data is written once).

    ``masks`` (a mask folder or file, :func:`cxrlab.data.masks.read_masks`) wins over the study's
    ``audit.masks`` and the phantom form's own masks.
    """
    from cxrlab.explain.cams import METHODS

    spec, base = load_study(ref)
    if spec.audit.method not in METHODS:
        raise CxrlabError(f"study {spec.name}: audit.method: unknown explanation method {spec.audit.method!r}; "
                          f"known: {', '.join(METHODS)}")
    if masks is not None and not Path(masks).exists():
        raise CxrlabError(f"--masks {masks}: no such mask folder or file")
    study = StudyFolder.of(spec.name, phantom, out)
    cells = spec.grid()
    baseline = spec.baseline_cell()
    extra: dict[str, Any] = {}  # dotted keys of the phantom form (or --root), under the cells' own keys
    small: dict[str, dict] = {}  # per-cell phantom overrides (win over the cell's own keys)
    roots = [root] if isinstance(root, str | Path) else list(root or [])
    root = None
    sites: dict[str, dict[str, Any]] = {}  # a cross-site study's datasets: site -> source, root, options, labels
    if phantom and spec.phantom is None:
        raise CxrlabError(f"study {spec.name} has no phantom form")
    if len(roots) > 1 and not spec.sites:
        raise CxrlabError(f"study {spec.name}: one --root DATA (got {len(roots)}); several folders are for a "
                          "cross-site study (sites: in its study file)")
    if phantom:
        sites, extra = _phantom_sites(spec, study) if spec.sites else ({}, _phantom_data(spec, study))
        extra = {**extra, **spec.phantom.overrides}
        if spec.phantom.only:
            cells = [c for c in cells if c.name in spec.phantom.only]
        baseline = spec.phantom.baseline or (baseline if baseline in {c.name for c in cells} else cells[0].name)
        small = spec.phantom.cells
    elif spec.sites:
        sites = {name: {"source": s.source, "root": folder, "options": dict(s.options), "labels": s.labels}
                 for (name, s), folder in zip(spec.sites.items(), site_roots(spec, roots).values(), strict=True)}
        root = " ".join(f"{name}={site['root']}" for name, site in sites.items())
    elif roots:
        root = str(roots[0])
        extra = {"data.root": root}
    command_line = parse_overrides(overrides or [])
    planned = []
    for cell in cells:
        fixed = {"name": cell.name, "runs_dir": str(study.runs)}
        origin = f"study {spec.name}, cell {cell.name}"
        cfg = cell_config(base, extra, cell.overrides, small.get(cell.name, {}), command_line, fixed, origin)
        if cell.sites:  # the sites it trains on, each with its columns of the study's labels (whole values)
            keys = {"data.sources": cell_sources(cfg, sites, cell.sites, spec.name), "data.options": {},
                    "data.root": ""}
            cfg = cell_config(base, extra, cell.overrides, {**small.get(cell.name, {}), **keys}, command_line,
                              fixed, origin)
        if not cfg.data.root and not cfg.data.sources:
            raise CxrlabError(f"study {spec.name}: no data root; pass --root DATA (or --phantom)")
        planned.append(PlannedCell(cell.name, cfg, cell_status(RunFolder(study.run_path(cell.name)), cfg)))
    found = masks if masks is not None else spec.audit.masks if spec.audit.masks else \
        (_phantom_masks(study) if phantom else None)
    return StudyPlan(spec, study, planned, baseline, phantom, list(overrides or []), root, str(ref),
                     str(found) if found is not None else None, sites)


def site_roots(spec: StudySpec, roots: list[str | Path]) -> dict[str, str]:
    """A cross-site study's ``--root SITE=DIR`` values as site -> folder (one line for a missing or unknown site)."""
    out: dict[str, str] = {}
    names = ", ".join(spec.sites)
    for value in map(str, roots):
        name, sep, folder = value.partition("=")
        if not sep or name not in spec.sites or not folder:
            raise CxrlabError(f"--root {value}: study {spec.name} is cross-site; give --root SITE=DIR for each "
                              f"of its sites ({names})")
        out[name] = folder
    missing = [s for s in spec.sites if s not in out]
    if missing:
        raise CxrlabError(f"study {spec.name}: no folder for site {', '.join(missing)}; pass --root SITE=DIR for "
                          f"each of its sites ({names}), or --phantom")
    return {s: out[s] for s in spec.sites}


def cell_sources(cfg: ExperimentConfig, sites: dict[str, dict[str, Any]], names: tuple[str, ...],
                 study: str) -> list[dict[str, Any]]:
    """``data.sources`` of a cross-site cell: each site it trains on, with its own columns of the study's labels
    (through the label vocabulary: NIH's ``Effusion`` is CheXpert's ``Pleural Effusion``)."""
    from cxrlab.data.sources.merge import canonical_labels
    from cxrlab.data.vocabulary import Vocabulary
    from cxrlab.workflows.external import source_label_columns

    vocab = Vocabulary.load(cfg.data.vocabulary)
    wanted = set(canonical_labels(vocab, cfg.data.labels, [sites[n]["source"] for n in names])) \
        if cfg.data.labels else None
    out = []
    for name in names:
        site = sites[name]
        labels = site.get("labels")
        if labels is None and wanted is not None:
            columns = source_label_columns(site["source"], site["root"], site["options"])
            if columns is not None:
                labels = [c for c in columns if vocab.canonical(site["source"], c)[0] in wanted]
                if not labels:
                    raise CxrlabError(f"study {study}: site {name} ({site['source']}) has none of the study's labels "
                                      f"({', '.join(cfg.data.labels)}) in the label vocabulary {vocab.version}")
        out.append({"source": site["source"], "root": str(site["root"]), "options": dict(site["options"]),
                    "labels": labels, "name": name})
    return out


def cell_config(base: dict[str, Any], form: dict[str, Any], own: dict[str, Any], small: dict[str, Any],
                command_line: dict[str, Any], fixed: dict[str, Any], origin: str) -> ExperimentConfig:
    """One cell's config, built as a tree (nothing goes through ``key=value`` text).

    Args:
        base: the base recipe with the study's ``recipe`` applied (:func:`~cxrlab.studies.spec.load_study`).
        form: dotted keys of the form that runs (the phantom's data and ``phantom.overrides``, or the data root).
        own: the cell's dotted keys; each replaces the form's value of the same key, and a mapping merges
            into the recipe's (``model.options: {width: 8}`` keeps the recipe's other options).
        small: the phantom form's per-cell keys: they replace whole values (a mapping is not merged).
        command_line: the parsed ``key=value`` overrides, merged last.
        fixed: keys the study sets itself (the cell's name and runs folder).
    """
    tree = merge_trees(base, replace_keys(replace_keys({}, form), own))
    tree = replace_keys(tree, small)
    tree = merge_trees(tree, command_line)
    return build_config(replace_keys(tree, fixed), origin + (" + overrides" if command_line else ""))


def write_plan(plan: StudyPlan) -> Path:
    """Write ``preset.yaml``, ``recipe.yaml`` and ``study.yaml`` (what runs, after every override)."""
    from cxrlab.studies.resolved import write_study_files
    from cxrlab.studies.spec import study_path

    cells = {c.name: c.cfg.model_dump(mode="json") for c in plan.cells}
    return write_study_files(plan.study, plan.spec, study_path(plan.source), cells, plan.overrides, plan.root,
                             plan.phantom, plan.baseline, plan.masks)


#: Phantom kinds that draw their own lung and heart masks (``write_phantom_dataset(..., masks=True)``).
MASK_KINDS = ("nih14", "kermany", "cxr5")


def _written_once(study: StudyFolder, made: dict[str, Any], key: str, write: Any) -> Any:
    """What ``write()`` wrote for the phantom form described by ``made``: read back from the study's data marker
    when it was written for the same ``made``, else written now and recorded there under ``key``."""
    import json

    from cxrlab.runio import atomic_write_json

    marker = study.data_marker
    old = json.loads(marker.read_text()) if marker.is_file() else {}
    if old.get("made") == made:
        return old[key]
    value = write()
    atomic_write_json(marker, {"made": made, key: value})
    return value


def _phantom_data(spec: StudySpec, study: StudyFolder) -> dict[str, Any]:
    """Write (once) the study's phantom dataset in the real layout; return its data keys (dotted).

    Kinds that know their anatomy (:data:`MASK_KINDS`) also write their lung and heart masks
    (:attr:`StudyFolder.data_masks`; the images are the same bytes), so every cell can be audited;
    ``options: {masks: false}`` turns them off.
    """
    from cxrlab.data.phantom_dataset import write_phantom_dataset

    p = spec.phantom
    options = {"masks": True, **p.options} if p.kind in MASK_KINDS else dict(p.options)

    def write() -> dict[str, Any]:
        ps = write_phantom_dataset(p.kind, study.data_dir, n=p.n, size=p.size, seed=0, **options)
        return {"source": ps.source, "root": str(ps.root), "labels": ps.labels, "task": ps.task}

    src = _written_once(study, {"kind": p.kind, "n": p.n, "size": p.size, "options": options}, "source", write)
    return {"data.source": src["source"], "data.root": src["root"], "task": src["task"],
            "data.labels": list(src["labels"]), "data.cache_dir": str(study.cache_dir)}


def _phantom_sites(spec: StudySpec, study: StudyFolder) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Write (once) a cross-site study's phantom hospitals, one dataset per site under ``data/<site>``; return
    site -> source, root, options and the form's common data keys (dotted)."""
    from cxrlab.data.phantom_dataset import write_phantom_dataset

    p = spec.phantom

    def write() -> dict[str, Any]:
        written = {}
        for name, site in p.sites.items():
            ps = write_phantom_dataset(site.kind, study.data_dir / name, n=p.n, size=p.size, seed=site.seed,
                                       **site.options)
            written[name] = {"source": ps.source, "root": str(ps.root)}
        return written

    made = {"n": p.n, "size": p.size, "sites": {k: v.model_dump() for k, v in p.sites.items()}}
    written = _written_once(study, made, "sites", write)
    sites = {name: {**written[name], "options": dict(p.sites[name].source_options), "labels": None}
             for name in spec.sites}
    return sites, {"task": "multilabel", "data.cache_dir": str(study.cache_dir)}


def _phantom_masks(study: StudyFolder) -> Path | None:
    """The phantom form's own masks, when its dataset was written with them."""
    return study.data_masks if study.data_masks.is_dir() else None


def run_cell(cfg: ExperimentConfig, status: str) -> dict[str, Any]:
    """Train one cell as the plan says (the unit a SLURM array task runs)."""
    return run_experiment(cfg, resume=status == "partial", overwrite=status == "changed")


def run_study(ref: str | Path, root: str | Path | list[str] | None = None, overrides: list[str] | None = None,
              phantom: bool = False, out: str | Path = "studies", launcher: str = "local",
              launcher_options: dict[str, Any] | None = None, masks: str | Path | None = None) -> Path:
    """Run every cell not yet done, then the post-steps and the study report; return ``report.html``.

    ``launcher="local"`` runs one cell per visible GPU at a time, each in its own process
    (``launcher_options["devices"]`` names them; a single device or none: in this process, in
    order); ``slurm`` / ``submitit-local`` submit a submitit job array (``launcher_options`` are
    submitit parameters).  ``masks``: the mask spec the cells are audited against (:func:`run_audits`).
    The study folder is locked (:class:`~cxrlab.locks.FolderLock`) from before
    the first write to the end of the report: a second ``study run`` of it is refused in one line.
    """
    with FolderLock(StudyFolder.of(load_study(ref)[0].name, phantom, out).path, what="study"):
        return _run_study(ref, root, overrides, phantom, out, launcher, launcher_options, masks)


def _run_study(ref: str | Path, root: str | Path | list[str] | None, overrides: list[str] | None, phantom: bool, out: str | Path,
               launcher: str, launcher_options: dict[str, Any] | None, masks: str | Path | None = None) -> Path:
    plan = plan_study(ref, root, overrides, phantom, out, masks)
    write_plan(plan)
    todo = [c for c in plan.cells if c.status != "done"]
    say(f"study {plan.spec.name}: {len(plan.cells)} cells, {len(plan.cells) - len(todo)} done, "
        f"{len(todo)} to run ({', '.join(f'{c.name} ({c.status})' for c in todo) or 'none'})")
    if launcher == "local":
        devices = (launcher_options or {}).get("devices") or _visible_gpus()
        if len(devices) > 1 and len(todo) > 1:
            _run_parallel(plan, todo, [str(d) for d in devices])
        else:
            _run_local(todo)
    elif launcher in ("slurm", "submitit-local"):
        _run_submitit(plan, todo, launcher, launcher_options or {})
    else:
        raise CxrlabError(f"unknown launcher {launcher!r}; use local or slurm")
    run_post_steps(plan)
    run_transfers(plan)
    run_audits(plan)
    run_subgroups(plan)
    from cxrlab.workflows.study_report import study_report

    return study_report(plan.study, plan)


def run_post_steps(plan: StudyPlan) -> list[str]:
    """Make the post steps' prediction-only cells (e.g. each cell's frontal + lateral views fused per study,
    or several cells' mean) from the finished cells, each evaluated with the study's B; return their names.

    Rebuilt on every ``study run`` (cheap: predictions only), so they follow retrained cells; ``study report``
    only reads them.
    """
    from cxrlab.workflows.ensemble import ensemble_runs
    from cxrlab.workflows.evaluate import evaluate_run

    finished = [c.name for c in plan.cells if run_finished(RunFolder(plan.study.run_path(c.name)))]
    made = []
    for name, post in plan.spec.post_cells(finished).items():
        target = plan.study.run_path(name)
        ensemble_runs([plan.study.run_path(m) for m in post.members], target, how=post.how, by=post.by)
        evaluate_run(target, n_boot=plan.spec.n_boot)
        made.append(name)
    return made


def run_transfers(plan: StudyPlan) -> list[str]:
    """A cross-site study: score every finished cell on every site's test split (``cxrlab evaluate --on``,
    ``RUN/external/<site>/``); return the (cell, site) pairs scored now (:mod:`cxrlab.workflows.transfer`)."""
    if not plan.sites:
        return []
    from cxrlab.workflows.transfer import score_cells_on_sites

    return score_cells_on_sites(plan.study, [c.name for c in plan.cells], plan.sites, plan.spec.n_boot)


def run_audits(plan: StudyPlan) -> list[str]:
    """Audit every finished trained cell against the study's masks (``cxrlab audit``: the lung-energy share per
    label with patient-bootstrap CIs at the study's B, and ``audit_<method>.csv`` per image, from which the
    report pairs each cell with the baseline); return the cells audited now.

    A cell whose audit is current (same method, masks and B) is skipped; retraining a cell removes its audit
    (``RunFolder.DERIVED``), so it is audited again.  Without masks nothing is audited and one line says so
    (the report's column reads "no masks").  A cell whose audit stops (e.g. masks of other images) is named in
    one line and left unaudited; the others go on.
    """
    from cxrlab.evaluate.records import AuditResult
    from cxrlab.workflows.audit import audit_run

    a = plan.spec.audit
    if plan.masks is None:
        say(f"study {plan.spec.name}: no masks, cells not audited (study run --masks SPEC, or cxrlab audit RUN "
            "--masks SPEC)")
        return []
    done = []
    for cell in plan.cells:
        run = RunFolder(plan.study.run_path(cell.name))
        if not run_finished(run):
            continue
        old = AuditResult.read(run.audit_file(a.method)) if run.audit_file(a.method).is_file() else None
        if old is not None and old.mask_source == plan.masks and old.n_boot == plan.spec.n_boot \
                and run.audit_images_file(a.method).is_file():
            continue
        try:
            audit_run(run.path, masks=plan.masks, method=a.method, n_boot=plan.spec.n_boot, sanity=a.sanity)
        except CxrlabError as e:
            say(f"study {plan.spec.name}, cell {cell.name}: not audited: {e}")
            continue
        done.append(cell.name)
    return done


#: The patient attributes ``study run`` groups by, where a cell's test predictions carry them.
SUBGROUP_BY = ("sex", "age")


def run_subgroups(plan: StudyPlan) -> list[str]:
    """Subgroup analysis (``cxrlab subgroups``) of every finished trained multi-label or binary cell whose test
    predictions carry sex and/or age, at the study's B; return the cells analysed now.

    A cell whose ``subgroups.json`` is current (same attributes and B) is skipped; retraining removes it
    (``RunFolder.DERIVED``).  A cell whose analysis stops (e.g. ages the bins do not cover) is named in one
    line and left without; the report lists the cells without one.
    """
    import pandas as pd

    from cxrlab.evaluate.records import SubgroupResult
    from cxrlab.workflows.subgroups import subgroups_run

    done = []
    for cell in plan.cells:
        run = RunFolder(plan.study.run_path(cell.name))
        if not run_finished(run) or not run.config_file.is_file() or not run.has_predictions("test"):
            continue
        if run.read_model_record().task == "multiclass":
            continue
        columns = pd.read_csv(run.predictions_file("test"), nrows=0).columns
        by = [a for a in SUBGROUP_BY if a in columns]
        if not by:
            continue
        old = SubgroupResult.read(run.subgroups_file) if run.subgroups_file.is_file() else None
        if old is not None and old.n_boot == plan.spec.n_boot and \
                all(any(g.attributes == [a] for g in old.groupings.values()) for a in by):
            continue
        try:
            subgroups_run(run.path, by=by, n_boot=plan.spec.n_boot, seed=run.read_config().seed)
        except CxrlabError as e:
            say(f"study {plan.spec.name}, cell {cell.name}: no subgroup analysis: {e}")
            continue
        done.append(cell.name)
    return done


def _run_local(todo: list[PlannedCell]) -> None:
    tic = time.perf_counter()
    with make_progress() as bar:
        task = bar.add_task("study cells", total=len(todo), info="")
        for k, cell in enumerate(todo):
            bar.update(task, info=cell.name)
            run_cell(cell.cfg, cell.status)
            per = (time.perf_counter() - tic) / (k + 1)
            bar.update(task, advance=1, info=f"{cell.name} done; ETA {per * (len(todo) - k - 1) / 60:.1f} min")


def _visible_gpus() -> list[str]:
    """The GPUs this process may use (one study cell each), as CUDA_VISIBLE_DEVICES entries."""
    import torch

    if not torch.cuda.is_available():
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [d.strip() for d in visible.split(",") if d.strip()] if visible else []
    return ids or [str(i) for i in range(torch.cuda.device_count())]


def _run_parallel(plan: StudyPlan, todo: list[PlannedCell], devices: list[str]) -> None:
    """One cell per device at a time, each in its own process (``CUDA_VISIBLE_DEVICES`` = that device).

    A cell's output goes to ``<study>/logs/<cell>.log``; a failed cell does not stop the others, and
    the study says which failed (rerun to resume them).
    """
    logs = plan.study.logs
    logs.mkdir(parents=True, exist_ok=True)
    queue, running, failed = list(todo), {}, []
    say(f"running {len(todo)} cells on {len(devices)} devices ({', '.join(devices)}); logs in {logs}")
    with make_progress() as bar:
        task = bar.add_task("study cells", total=len(todo), info="")
        try:
            _fill_devices(queue, running, failed, devices, plan.study, bar, task)
        finally:  # interrupted (Ctrl-C) or failed here: stop the cells still running; a rerun resumes them
            for _, proc, log in running.values():
                proc.terminate()
                proc.wait()
                log.close()
    if failed:
        raise CxrlabError(f"{len(failed)} study cells failed (rerun to resume; logs in {logs}): " + "; ".join(failed))


def _fill_devices(queue: list[PlannedCell], running: dict, failed: list[str], devices: list[str],
                  study: StudyFolder, bar: Any, task: Any) -> None:
    """Keep one cell running per device until the queue is empty and every cell has ended."""
    from cxrlab.runio import atomic_write_json

    while queue or running:
        for slot, device in enumerate(devices):
            if not queue or slot in running:
                continue
            cell = queue.pop(0)
            cfg_file = atomic_write_json(study.cell_config(cell.name), cell.cfg.model_dump(mode="json"))
            log = open(study.cell_log(cell.name), "w")  # noqa: SIM115  (closed when the process ends)
            env = {**os.environ, "CUDA_VISIBLE_DEVICES": device, "CXRLAB_QUIET": "1"}
            proc = subprocess.Popen([sys.executable, "-m", "cxrlab.workflows.study_cell", str(cfg_file),
                                     cell.status], stdout=log, stderr=subprocess.STDOUT, env=env,
                                    preexec_fn=set_parent_death_signal)  # a killed study takes its cells along
            running[slot] = (cell, proc, log)
        time.sleep(0.5)
        for slot, (cell, proc, log) in list(running.items()):
            if proc.poll() is None:
                continue
            log.close()
            del running[slot]
            if proc.returncode != 0:
                tail = study.cell_log(cell.name).read_text(errors="replace").strip().splitlines()
                failed.append(f"{cell.name}: {tail[-1] if tail else f'exit {proc.returncode}'}")
            bar.update(task, advance=1, info=f"{cell.name} {'failed' if proc.returncode else 'done'}")


def _run_submitit(plan: StudyPlan, todo: list[PlannedCell], launcher: str, options: dict[str, Any]) -> None:
    """One job per cell through submitit (SLURM job array, or its local executor for tests)."""
    try:
        import submitit
    except ImportError:
        raise CxrlabError("the slurm launcher needs submitit: pip install submitit") from None
    if not todo:
        return
    cluster = "local" if launcher == "submitit-local" else None
    executor = submitit.AutoExecutor(folder=str(plan.study.submitit / "%j"), cluster=cluster)
    params = {"timeout_min": 60 * 24, **options}
    if cluster == "local":
        params = {k: v for k, v in params.items() if not k.startswith("slurm_")}
    executor.update_parameters(name=f"cxrlab-{plan.spec.name}", **params)
    jobs = executor.map_array(run_cell, [c.cfg for c in todo], [c.status for c in todo])
    say(f"submitted {len(jobs)} jobs ({jobs[0].job_id.split('_')[0]}); waiting (logs in {plan.study.submitit})")
    failed = []
    for cell, job in zip(todo, jobs, strict=True):
        try:
            job.result()
        except Exception as e:  # noqa: BLE001  (submitit re-raises the job's error with its traceback)
            failed.append(f"{cell.name}: {str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__}")
    if failed:
        raise CxrlabError(f"{len(failed)} study cells failed (rerun to resume): " + "; ".join(failed))
