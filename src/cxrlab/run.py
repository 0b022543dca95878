"""The run folder: everything one experiment writes, written atomically.

::

    runs/<name>/
      config.yaml            fully resolved config + seed, versions, git commit
      split.json             image ids per split and a content hash
      metrics.jsonl          one line per epoch
      checkpoints/best.safetensors, last.safetensors   model weights
      checkpoints/last_state.pt                         optimiser/scheduler/RNG (resume)
      model.json             architecture, labels, input size, normalisation, thresholds
      predictions.csv        test-set probabilities next to the true labels
      summary.json           headline metrics
      figures/*.png          plots;  report.html  the report
"""

from __future__ import annotations

import json
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from cxrlab import __version__
from cxrlab.config import ExperimentConfig, to_yaml
from cxrlab.data.splits import lists_hash
from cxrlab.errors import CxrlabError
from cxrlab.runio import append_jsonl, atomic_write, atomic_write_json, atomic_write_text


def git_commit() -> str:
    """Commit of the cxrlab source tree, or ``unknown`` (e.g. installed from a wheel)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment() -> dict[str, str]:
    import numpy
    import timm

    return {"cxrlab": __version__, "torch": str(torch.__version__), "timm": str(timm.__version__),
            "numpy": str(numpy.__version__), "python": platform.python_version(),
            "git_commit": git_commit()}


class RunFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.figures = self.path / "figures"
        self.checkpoints = self.path / "checkpoints"

    def create(self) -> RunFolder:
        self.figures.mkdir(parents=True, exist_ok=True)
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        return self

    # ---- config, split, metrics ---------------------------------------------------
    def write_config(self, cfg: ExperimentConfig) -> None:
        atomic_write_text(self.path / "config.yaml", to_yaml(cfg, {"environment": environment()}))

    def read_config(self) -> ExperimentConfig:
        """The resolved config the run was trained with (its ``environment`` record left out)."""
        import yaml

        from cxrlab.config import build_config

        path = self.path / "config.yaml"
        if not path.is_file():
            raise CxrlabError(f"{self.path}: not a cxrlab run folder (config.yaml missing)")
        tree = yaml.safe_load(path.read_text()) or {}
        tree.pop("environment", None)
        return build_config(tree, str(path))

    def write_split(self, splits: dict[str, list[str]]) -> str:
        digest = lists_hash(splits)
        atomic_write_json(self.path / "split.json", {"hash": digest, **splits})
        return digest

    def log_metrics(self, row: dict[str, Any]) -> None:
        append_jsonl(self.path / "metrics.jsonl", row)

    def read_metrics(self) -> list[dict[str, Any]]:
        p = self.path / "metrics.jsonl"
        if not p.is_file():
            return []
        return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]

    def truncate_metrics(self, epochs: int) -> None:
        """Keep the first ``epochs`` lines (resume after a crash mid-epoch)."""
        rows = [r for r in self.read_metrics() if r.get("epoch", 0) <= epochs]
        atomic_write_text(self.path / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))

    # ---- model --------------------------------------------------------------------
    def write_model_json(self, info: dict[str, Any]) -> None:
        atomic_write_json(self.path / "model.json", info)

    def read_model_json(self) -> dict[str, Any]:
        p = self.path / "model.json"
        if not p.is_file():
            raise CxrlabError(f"{self.path}: not a cxrlab run folder (model.json missing)")
        return json.loads(p.read_text())

    def save_weights(self, model: torch.nn.Module, which: str) -> Path:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        return atomic_write(self.checkpoints / f"{which}.safetensors", lambda tmp: save_file(state, tmp))

    def load_weights(self, model: torch.nn.Module, which: str = "best") -> None:
        path = self.checkpoints / f"{which}.safetensors"
        if not path.is_file():
            raise CxrlabError(f"{path}: checkpoint not found")
        state = load_file(str(path))
        own = model.state_dict()
        missing = sorted(set(own) - set(state))
        extra = sorted(set(state) - set(own))
        shapes = [k for k in set(own) & set(state) if own[k].shape != state[k].shape]
        if missing or extra or shapes:
            what = (f"{len(missing)} missing, {len(extra)} unexpected, {len(shapes)} wrong-shape tensors"
                    f" (e.g. {(missing + extra + shapes)[0]})")
            raise CxrlabError(f"{path}: checkpoint does not match the model: {what}")
        model.load_state_dict(state)

    def save_state(self, state: dict[str, Any]) -> None:
        atomic_write(self.checkpoints / "last_state.pt", lambda tmp: torch.save(state, tmp))

    def load_state(self) -> dict[str, Any] | None:
        p = self.checkpoints / "last_state.pt"
        return torch.load(str(p), map_location="cpu", weights_only=False) if p.is_file() else None
