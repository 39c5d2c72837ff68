"""Cheap series preparation for terminal plots: decimation and log-style y transforms (the
ticks for those axes are `axes.py`'s).

Drawing costs time linear in the number of points a pane is handed, so every series is reduced
to min/max pairs per bin (about two points per terminal column) before plotting. Min/max keeps
spikes visible, which is the point of the plot: a single exploding epoch must not be averaged
away. Everything here is numpy on contiguous float arrays so a million points costs a few ms.
"""
from __future__ import annotations

import numpy as np

# The one min/max decimator, shared with the PNG (re-exported: the panes and tests use it from here).
from ..report.decimation import minmax_decimate as minmax_decimate
from .axes import SYMLOG_LINTHRESH


def is_positive(y: np.ndarray) -> bool:
    return bool(y.size) and bool((y > 0).all())


def log10_transform(y: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.log10(y)
    return out


def symlog_transform(y: np.ndarray, linthresh: float = SYMLOG_LINTHRESH) -> np.ndarray:
    """sign(y)·log10(1 + |y|/c): monotonic, defined at 0 and for negative values."""
    out: np.ndarray = np.sign(y) * np.log10(1.0 + np.abs(y) / linthresh)
    return out
