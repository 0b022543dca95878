"""Phantom dataset modes, each written in the layout of a real dataset.

* :mod:`.chexpert`: ``write_phantom_chexpert``, CheXpert layout, frontal + lateral
  views per study, uncertain (-1) labels from a known rule
* :mod:`.kermany`: ``write_phantom_kermany``, ``{train,val,test}/{NORMAL,PNEUMONIA}``
* :mod:`.cxr5`: ``write_phantom_cxr5``, 5 classes as NPZ arrays or class folders
* :mod:`.draw`, :mod:`.patterns`, :mod:`.lateral`: drawing code

The NIH layout (the default phantom) is :func:`cxrlab.data.phantom_dataset.write_phantom`;
:func:`cxrlab.data.phantom_dataset.write_phantom_dataset` picks any mode by name.
"""

from __future__ import annotations

import importlib

_EXPORTS = {"write_phantom_chexpert": "chexpert", "UncertainRule": "chexpert",
            "write_phantom_kermany": "kermany", "write_phantom_cxr5": "cxr5"}


def __getattr__(name: str):  # lazy: phantom.py imports .draw, the writers import phantom.py
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
