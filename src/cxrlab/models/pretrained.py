"""Pretrained weights: load a local file and say what loaded; check hub weights before any work.

A local file (``.safetensors`` or ``.pth``) is matched to the model tensor by
tensor, by name and shape.  Fine-tuning from the wrong file used to train from
random weights without a word, because the 0-dim ``num_batches_tracked``
buffers of any two batch-normed networks "match"; so:

* a 0-dim tensor never counts as a match on its own: it is loaded (and
  counted) only when a tensor of the same module with at least one dimension
  loaded too;
* a 3-channel (RGB) first convolution loaded into a 1-channel model is folded
  to grey by timm's :func:`timm.models.adapt_input_conv` (summed over the
  input channels), as timm's hub path does, instead of being left random;
* the classifier head is re-initialised when its shape differs (another label
  set); it then counts as not loaded (``N of M`` counts every tensor of the
  model, the head included), but it is left out of the share below;
* when fewer than :data:`MIN_SHARE` of the model's tensors outside the head
  load, it is an error in one line unless ``strict=False``
  (``model.pretrained_strict=false``).

Hub weights (``model.pretrained=hub``) are checked by :func:`check_hub_weights`
before a run folder is made: weights neither in the local Hugging Face cache
nor reachable now (offline mode, no network) stop with one line naming the
weights and the two alternatives, instead of minutes of retries and a traceback.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from cxrlab.errors import CxrlabError

#: Share of the model's tensors outside the classifier head that a local file must supply.
MIN_SHARE = 0.5

ALTERNATIVES = "model.pretrained=none (random initialisation) or model.pretrained=/path/weights.safetensors"


@dataclass(frozen=True)
class WeightsReport:
    """What a local weights file gave the model (stored in ``summary.json`` as ``pretrained``)."""

    file: str
    loaded: int
    """Tensors loaded, 0-dim buffers only where their module loaded."""
    total: int
    """Tensors of the model's state dict (the head included)."""
    share: float
    """Loaded share of the tensors with a dimension outside the classifier head."""
    folded: list[str] = field(default_factory=list)
    """First convolutions adapted to the model's input channels (RGB -> grey)."""
    head_reinitialised: list[str] = field(default_factory=list)
    """Classifier tensors left fresh because their shape differs (another label set)."""
    strict: bool = True

    @property
    def text(self) -> str:
        """``loaded N of M tensors from FILE`` plus what was folded or re-initialised."""
        notes = []
        if self.folded:
            notes.append(f"first convolution folded to the model's input channels: {', '.join(self.folded)}")
        if self.head_reinitialised:
            notes.append(f"classifier head re-initialised (shape differs): {', '.join(self.head_reinitialised)}")
        tail = f" ({'; '.join(notes)})" if notes else ""
        return f"loaded {self.loaded} of {self.total} tensors from {self.file}{tail}"

    def to_record(self) -> dict[str, Any]:
        return {"source": "file", "file": self.file, "loaded": self.loaded, "total": self.total,
                "share": round(self.share, 4), "folded": self.folded, "head_reinitialised": self.head_reinitialised,
                "strict": self.strict, "text": self.text}


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` or torch file (a ``state_dict`` entry is unwrapped)."""
    if not path.is_file():
        raise CxrlabError(f"{path}: pretrained weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
            state = state.get("state_dict", state) if isinstance(state, dict) else state
    except Exception as e:  # a truncated or foreign file: name it in one line
        raise CxrlabError(f"{path}: not a readable weights file ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CxrlabError(f"{path}: not a state dict of tensors (a whole pickled model?)")
    return state


def _head_names(model: nn.Module) -> set[str]:
    """State-dict names of the classifier (``get_classifier()``), empty when the model has none."""
    get = getattr(model, "get_classifier", None)
    head = get() if callable(get) else None
    if not isinstance(head, nn.Module):
        return set()
    ids = {id(t) for t in head.state_dict(keep_vars=True).values()}
    return {k for k, v in model.state_dict(keep_vars=True).items() if id(v) in ids}


def _fold(own: torch.Tensor, theirs: torch.Tensor) -> torch.Tensor | None:
    """``theirs`` adapted to ``own``'s input channels when only that axis differs (RGB <-> grey), else None."""
    if own.ndim != 4 or theirs.ndim != 4 or own.shape[1] == theirs.shape[1]:
        return None
    if own.shape[0] != theirs.shape[0] or own.shape[2:] != theirs.shape[2:] or theirs.shape[1] not in (1, 3):
        return None
    from timm.models import adapt_input_conv

    try:
        return adapt_input_conv(own.shape[1], theirs, base_chans=theirs.shape[1]).to(own.dtype)
    except (NotImplementedError, ValueError, AssertionError):
        return None


def load_local_weights(model: nn.Module, path: str | Path, strict: bool = True) -> WeightsReport:
    """Load the matching tensors of ``path`` into ``model``; say how many.

    Args:
        strict: refuse a file that supplies under :data:`MIN_SHARE` of the tensors outside the head.

    Raises:
        CxrlabError: file missing or unreadable; too few tensors match (``strict``).
    """
    path = Path(path)
    state = read_state_dict(path)
    own = model.state_dict()
    head = _head_names(model)
    usable: dict[str, torch.Tensor] = {}
    folded, head_fresh = [], []
    for k, v in own.items():
        if k not in state or v.ndim == 0:
            continue
        theirs = state[k]
        if theirs.shape == v.shape:
            usable[k] = theirs
        elif k in head:
            head_fresh.append(k)
        elif (grey := _fold(v, theirs)) is not None:  # a first convolution with other input channels
            usable[k] = grey
            folded.append(k)
    loaded_modules = {k.rpartition(".")[0] for k in usable}
    for k, v in own.items():  # 0-dim buffers (num_batches_tracked) follow their module, never alone
        if v.ndim == 0 and k in state and state[k].ndim == 0 and k.rpartition(".")[0] in loaded_modules:
            usable[k] = state[k]
    body = [k for k, v in own.items() if v.ndim > 0 and k not in head]
    share = sum(k in usable for k in body) / max(1, len(body))
    if share < MIN_SHARE and strict:
        name = type(model).__name__
        raise CxrlabError(f"{path}: only {sum(k in usable for k in body)} of {len(body)} tensors of the {name} "
                          f"outside its classifier head match by name and shape (another architecture, "
                          f"other model.options or input channels?); model.pretrained_strict=false loads "
                          f"the matching ones anyway")
    model.load_state_dict(usable, strict=False)
    return WeightsReport(file=str(path), loaded=len(usable), total=len(own), share=share, folded=folded,
                         head_reinitialised=head_fresh, strict=strict)


# ---- hub weights ---------------------------------------------------------------------------------

def hub_model_names(name: str, options: dict[str, Any]) -> list[str]:
    """The timm models whose hub weights ``model.pretrained=hub`` fetches for model ``name``."""
    if name == "simple_cnn":
        raise CxrlabError(f"model.pretrained=hub: simple_cnn has no hub weights; use {ALTERNATIVES}")
    if name == "fusion":
        from cxrlab.models.fusion import DEFAULT_BACKBONES

        return list(options.get("backbones") or DEFAULT_BACKBONES)
    return [name]


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hf_offline() -> bool:
    """Hugging Face offline mode (``HF_HUB_OFFLINE``, or ``TRANSFORMERS_OFFLINE``), read now, not at import."""
    return _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("TRANSFORMERS_OFFLINE"))


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache as the environment says now (``HF_HUB_CACHE``, ``HF_HOME``/hub, default)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def _hf_cached(repo: str, filenames: list[str]) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    repo_id, _, revision = repo.partition("@")
    for f in filenames:
        hit = try_to_load_from_cache(repo_id, f, cache_dir=str(hf_cache_dir()), revision=revision or None)
        if isinstance(hit, str):
            return hit
    return None


def reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``url``'s host opens within ``timeout`` seconds (no request is sent)."""
    parts = urlparse(url)
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    if not host:
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def hub_weights_location(model_name: str) -> tuple[str, str | None]:
    """``(where, cached file or None)`` of timm's default pretrained weights for ``model_name``."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(model_name) if _known_timm(model_name) else None
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise CxrlabError(f"model.pretrained=hub: timm has no pretrained weights for {model_name}; use {ALTERNATIVES}")
    if cfg.hf_hub_id:
        from timm.models._hub import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

        names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME]
        return f"{cfg.hf_hub_id} on the Hugging Face hub", _hf_cached(cfg.hf_hub_id, names)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(cfg.url).path).name
    return cfg.url, str(cached) if cached.is_file() else None


def _known_timm(name: str) -> bool:
    import timm

    return bool(timm.is_model(name))


def check_hub_weights(name: str, options: dict[str, Any]) -> list[str]:
    """Refuse, in one line, hub weights that are neither cached nor downloadable now; return where they are.

    Fast by design: a cache look-up, then (unless offline mode is set) one TCP
    connection with a 3 s timeout to the hub's host, instead of the download's
    retries.  Called before a run folder is made.
    """
    where = []
    for model_name in hub_model_names(name, options):
        loc, cached = hub_weights_location(model_name)
        if cached:
            where.append(cached)
            continue
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co") if "Hugging Face hub" in loc else loc
        if hf_offline():
            why = "HF_HUB_OFFLINE is set"
        elif not reachable(endpoint):
            why = f"{urlparse(endpoint).hostname} cannot be reached (no network?)"
        else:
            where.append(loc)
            continue
        raise CxrlabError(f"model.pretrained=hub: timm's weights for {model_name} ({loc}) are not in the local "
                          f"cache ({hf_cache_dir()}) and {why}; use {ALTERNATIVES}")
    return where
