"""Loss-curve PNG: the picture a run leaves behind, also rebuilt offline by `molpt-tui plot`.

Uses matplotlib's object API on an Agg canvas rather than pyplot: no display is needed, no
global backend is switched under other code, and the trainer thread can render while a TUI
runs in the main thread (pyplot's global figure registry is not thread-safe).
"""
from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..fileio import atomic_write_bytes
from ..training.history import History
from ..training.metrics_log import read_events
from ..training.run_dir import RunDirectory, png_name

DEFAULT_PNG = "loss_curves.png"
# Agg draws 100k-point lines fine, but the PNG gains nothing beyond a few thousand columns.
MAX_POINTS = 4000


def _finite(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    xa = np.asarray(x, dtype=float)
    ya = np.asarray(y, dtype=float)
    keep = np.isfinite(ya) & np.isfinite(xa)
    return xa[keep], ya[keep]


def decimate(x: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Min and max per bin, in order: spikes (the thing one looks for) survive thinning."""
    n = len(x)
    if n <= max_points:
        return x, y
    n_bins = max(1, max_points // 2)
    edges = np.linspace(0, n, n_bins + 1).astype(int)
    keep: list[int] = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        if hi <= lo:
            continue
        seg = y[lo:hi]
        a, b = lo + int(np.argmin(seg)), lo + int(np.argmax(seg))
        keep.extend(sorted({a, b}))
    idx = np.asarray(keep)
    return x[idx], y[idx]


def _set_yscale(ax: Axes, values: Sequence[np.ndarray]) -> None:
    """Linear when the data span little; log when positive over decades; symlog otherwise.

    Losses in kT are often negative late in training after 1e12 at the start, so a plain log
    axis would drop the interesting part and a linear one would flatten it.
    """
    data = np.concatenate([np.abs(v) for v in values if len(v)]) if any(len(v) for v in values) else np.empty(0)
    if data.size == 0:
        return
    hi = float(np.max(data))
    lo = float(np.percentile(data, 5))
    if hi == 0 or hi / max(lo, 1e-300) < 100:
        return
    if all(np.all(v > 0) for v in values if len(v)):
        ax.set_yscale("log")
        return
    # Below linthresh the axis is linear: put it where the small, late-training values live.
    linthresh = max(lo, min(1.0, hi / 100.0))
    ax.set_yscale("symlog", linthresh=linthresh)


Curve = tuple[str, Any, dict[str, Any]]  # label, y values (list or array), plot style


def _plot_panel(ax: Axes, x: Sequence[float], curves: Sequence[Curve], title: str, ylabel: str) -> None:
    plotted = []
    dropped = 0
    for label, y, style in curves:
        xs, ys = _finite(x, y)
        dropped = max(dropped, len(y) - len(ys))
        if len(ys):
            xd, yd = decimate(xs, ys)
            ax.plot(xd, yd, label=label, **style)
            plotted.append(ys)
    _set_yscale(ax, plotted)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3, which="both")
    if not plotted:
        ax.text(0.5, 0.5, "no finite data yet", ha="center", va="center", transform=ax.transAxes, color="0.5")
    elif len(curves) > 1:
        ax.legend(fontsize=8, loc="best")
    if dropped:
        ax.text(0.99, 0.01, f"{dropped} non-finite epoch(s) not shown", ha="right", va="bottom",
                transform=ax.transAxes, fontsize=7, color="tab:red")


def _diff(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore"):
        out: np.ndarray = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    return out


def _acceptance_summary(history: History) -> str:
    blocks = [b for b in history.blocks if math.isfinite(b.acc_flow)]
    if not blocks:
        return ""
    last = blocks[-1]
    text = f"acceptance (epoch {last.epoch}): flow {last.acc_flow:.3g}"
    if math.isfinite(last.acc_naive):
        text += f" vs naive {last.acc_naive:.3g}"
    return text


def _default_title(history: History) -> str:
    run = history.run
    if run is None:
        return "molpt-tui training"
    return f"{run.preset or 'molpt-tui'}: {run.model}, {run.t_cold:.1f}K \u2192 {run.t_hot:.1f}K"


def build_figure(history: History, title: str | None = None) -> Figure:
    x = history.epochs
    s = history.series
    fig = Figure(figsize=(13, 9), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2)
    fwd, inv = {"color": "tab:blue"}, {"color": "tab:orange"}

    _plot_panel(axes[0, 0], x, [("total loss", s["loss"], {"color": "black"})], "Total loss", "loss [kT]")
    _plot_panel(axes[0, 1], x, [
        ("forward: Fwd_E \u2212 Fwd LogDet", _diff(s["fwd_energy"], s["fwd_logdet"]), fwd),
        ("inverse: Inv_E \u2212 Inv LogDet", _diff(s["inv_energy"], s["inv_logdet"]), inv),
    ], "Forward vs inverse terms", "[kT]")
    _plot_panel(axes[1, 0], x, [
        (r"Fwd_E  $\beta_h\,U(T x)$", s["fwd_energy"], fwd),
        (r"Inv_E  $\beta_c\,U(T^{-1} y)$", s["inv_energy"], inv),
    ], "Energy components \u03b2\u00b7U", "\u03b2\u00b7U [kT]")
    # -Inv LogDet drawn faintly: for a symmetric transport it lies on top of Fwd LogDet.
    _plot_panel(axes[1, 1], x, [
        ("Fwd LogDet", s["fwd_logdet"], fwd),
        ("Inv LogDet", s["inv_logdet"], inv),
        ("\u2212Inv LogDet (mirror)", -np.asarray(s["inv_logdet"], dtype=float),
         {"color": "tab:orange", "linestyle": ":", "alpha": 0.6}),
    ], "log|det J|  forward / inverse", "[nats]")

    _overlay_acceptance(axes[0, 0], history)
    full_title = title if title is not None else _default_title(history)
    summary = _acceptance_summary(history)
    if summary:
        full_title = f"{full_title}\n{summary}"
    fig.suptitle(full_title, fontsize=12)
    fig.tight_layout()
    return fig


def _overlay_acceptance(ax: Axes, history: History) -> None:
    pts = [(b.epoch, b.acc_flow, b.acc_naive) for b in history.blocks if math.isfinite(b.acc_flow)]
    if len(pts) < 2:
        return
    twin = ax.twinx()
    e = np.array([p[0] for p in pts], dtype=float)
    flow = np.array([p[1] for p in pts], dtype=float)
    naive = np.array([p[2] for p in pts], dtype=float)
    twin.plot(e, flow, "o-", color="tab:green", ms=3, lw=1, label="flow-swap acc.")
    ok = np.isfinite(naive)
    if ok.any():
        twin.plot(e[ok], naive[ok], "s--", color="tab:gray", ms=3, lw=1, label="naive acc.")
    positive = np.concatenate([flow[flow > 0], naive[ok & (naive > 0)]])
    # Wide temperature gaps give acceptances of 1e-9: only a log axis shows them moving.
    if positive.size and positive.min() < 1e-2:
        twin.set_yscale("log")
    twin.set_ylabel("swap acceptance", color="tab:green")
    twin.legend(fontsize=7, loc="center right")


def _write_atomic(fig: Figure, path: Path) -> None:
    atomic_write_bytes(path, lambda fh: fig.savefig(fh, format="png"))


def save_loss_curves(history: History, path: str | os.PathLike[str], title: str | None = None) -> Path:
    """Render the 4-panel loss figure to `path` (a directory gets the `png_name` file)."""
    path = Path(path)
    if path.is_dir():
        run = history.run
        path = path / (png_name(run.t_cold, run.t_hot) if run else DEFAULT_PNG)
    fig = build_figure(history, title)
    with warnings.catch_warnings():
        # symlog/log axes with few points make matplotlib chatty; the PNG is still right.
        warnings.simplefilter("ignore", UserWarning)
        _write_atomic(fig, path)
    return path


def plot_run_dir(run_dir: RunDirectory | str | os.PathLike[str], path: str | os.PathLike[str] | None = None,
                 warn: Callable[[str], None] | None = None) -> Path:
    """Rebuild the PNG of a run from its metrics log (corrupt lines are skipped with a warning)."""
    rd = run_dir if isinstance(run_dir, RunDirectory) else RunDirectory(run_dir)
    if not rd.metrics.is_file():
        raise FileNotFoundError(f"no {rd.metrics.name} in {rd.path}: is this a molpt-tui run directory?")
    history = History.from_events(read_events(rd.metrics, warn=warn))
    if path is None:
        run = history.run
        path = rd.png(run.t_cold, run.t_hot) if run else rd.path / DEFAULT_PNG
    return save_loss_curves(history, path)
