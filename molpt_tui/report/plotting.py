"""Loss-curve PNG: the picture a run leaves behind, also rebuilt offline by `molpt-tui plot`.

Uses matplotlib's object API on an Agg canvas rather than pyplot: no display is needed, no
global backend is switched under other code, and the trainer thread can render while a TUI
runs in the main thread (pyplot's global figure registry is not thread-safe).

One run: the four loss panels, then what decides (train and validation KL; flow-swap vs naive
acceptance and ESS in both directions per evaluation, with block-bootstrap error bars; the
test-set points), and a text panel with how the run ended, the final model and the good signs.
Several runs: the same metric of each run overlaid, the legend by run name.
Every axis names its quantity and unit; legends sit outside the data; x is "epoch".
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
from matplotlib.ticker import FixedLocator, MaxNLocator

from ..errors import UserError
from ..fileio import atomic_write_bytes
from ..training.checklist import checklist
from ..training.events import DataProgress
from ..training.history import History
from ..training.metrics_log import read_events
from ..training.run_dir import RunDirectory, png_name
from .decimation import minmax_decimate

DEFAULT_PNG = "loss_curves.png"
COMPARISON_PNG = "runs_comparison.png"
# Agg draws 100k-point lines fine, but the PNG gains nothing beyond a few thousand columns.
MAX_POINTS = 4000
_STATUS_COLOURS = {"diverged": "tab:red", "failed": "tab:red", "stopped": "tab:gray", "ui-crashed": "tab:red"}
_MARKS = {"pass": "\u2714", "fail": "\u2718", "pending": "\u2026"}


def _finite(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    xa = np.asarray(x, dtype=float)
    ya = np.asarray(y, dtype=float)
    keep = np.isfinite(ya) & np.isfinite(xa)
    return xa[keep], ya[keep]


def decimate(x: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most about `max_points` points, min and max per bin, in order."""
    return minmax_decimate(x, y, max(1, max_points // 2))


def _set_yscale(ax: Axes, values: Sequence[np.ndarray]) -> None:
    """Linear when the data span little; log when positive over decades; symlog otherwise.

    Losses in kT are often negative late in training after 1e12 at the start, so a plain log
    axis would drop the interesting part and a linear one would flatten it. Symlog ticks are
    put on every decade the data reach (readable labels, not just -1/0/1).
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
    ax.yaxis.set_major_locator(FixedLocator(symlog_ticks(values, linthresh)))


def symlog_ticks(values: Sequence[np.ndarray], linthresh: float, max_ticks: int = 7) -> list[float]:
    """0 and signed decades beyond `linthresh` that the data reach, thinned to about `max_ticks`
    per sign, so labels neither crowd around 0 nor stop at +-1 when the data sit at +-1e6."""
    data = np.concatenate([v for v in values if len(v)])
    ticks = [0.0]
    for sign, extreme in ((1.0, float(np.max(data))), (-1.0, -float(np.min(data)))):
        if extreme <= linthresh:
            continue
        lo, hi = math.floor(math.log10(linthresh)), math.floor(math.log10(extreme))
        if hi - lo >= 3:
            lo += 1  # +-linthresh sits half a decade from 0: over many decades its label collides
        step = max(1, math.ceil((hi - lo + 1) / max_ticks))
        # counted down from the largest decade reached, so the extreme end is always labelled
        ticks += [sign * 10.0 ** k for k in range(hi, lo - 1, -step)]
    return sorted(ticks)


Curve = tuple[str, Any, dict[str, Any]]  # label, y values (list or array), plot style


def _legend(ax: Axes) -> None:
    """Below the axes, outside the data (constrained layout makes room for it)."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.13),
                  ncol=min(3, len(handles)), frameon=False, borderaxespad=0.0, handlelength=1.8)


def _style(ax: Axes, title: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=9, loc="left")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3, which="both")


def _no_data(ax: Axes, text: str = "no finite data yet") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.5")


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
    _style(ax, title, ylabel)
    if not plotted:
        _no_data(ax)
    else:
        _legend(ax)
    if dropped:
        ax.text(0.99, 0.01, f"{dropped} non-finite epoch(s) not shown", ha="right", va="bottom",
                transform=ax.transAxes, fontsize=7, color="tab:red")


def _diff(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore"):
        out: np.ndarray = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    return out


def _points(history: History, value: str, se: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(epochs, values, standard errors) of a log-block field, finite values only."""
    rows = [(b.epoch, float(getattr(b, value)), float(getattr(b, se)) if se else math.nan) for b in history.blocks]
    rows = [r for r in rows if math.isfinite(r[1])]
    if not rows:
        return np.empty(0), np.empty(0), np.empty(0)
    a = np.asarray(rows, dtype=float)
    return a[:, 0], a[:, 1], np.nan_to_num(a[:, 2], nan=0.0)


def _errorbar(ax: Axes, x: np.ndarray, y: np.ndarray, err: np.ndarray, label: str, **style: Any) -> None:
    if len(x):
        ax.errorbar(x, y, yerr=err if np.any(err > 0) else None, label=label, ms=3, lw=1, capsize=2, **style)


def _test_marks(ax: Axes, history: History, value: str, se: str | None, colour: str, label: bool = True) -> None:
    """The test-set evaluations (untrained map, final model) at their weights' epoch, as stars."""
    for t in history.tests:
        y = float(getattr(t, value))
        if not math.isfinite(y):
            continue
        err = float(getattr(t, se)) if se else math.nan
        name = "test, untrained" if t.label == "untrained" else f"test, final model (epoch {t.epoch})"
        ax.errorbar([t.epoch], [y], yerr=[err] if math.isfinite(err) and err > 0 else None, fmt="*", ms=9,
                    color=colour, mec="black", mew=0.5, capsize=3, label=name if label else None)


def _kl_panel(ax: Axes, history: History) -> None:
    x, y = _finite(history.epochs, history.series["kl"])
    drawn = []
    if len(y):
        xd, yd = decimate(x, y)
        ax.plot(xd, yd, color="0.45", lw=1, label="training (epoch mean)")
        drawn.append(y)
    e, v, s = _points(history, "kl_val", "kl_val_se")
    _errorbar(ax, e, v, s, "validation", fmt="o-", color="tab:purple")
    if len(v):
        drawn.append(v)
    _test_marks(ax, history, "kl", "kl_se", "tab:purple")
    drawn += [np.asarray([t.kl]) for t in history.tests if math.isfinite(t.kl)]
    _set_yscale(ax, drawn)
    _style(ax, "paired KL estimate, loss above its floor", "KL fwd+inv [kT]")
    if drawn:
        _legend(ax)
    else:
        _no_data(ax)


def _acceptance_panel(ax: Axes, history: History) -> None:
    e, flow, s = _points(history, "acc_flow", "acc_flow_se")
    e0, naive, s0 = _points(history, "acc_naive", "acc_naive_se")
    _errorbar(ax, e, flow, s, "flow swap (validation)", fmt="o-", color="tab:green")
    _errorbar(ax, e0, naive, s0, "naive swap (validation)", fmt="s--", color="tab:gray")
    _test_marks(ax, history, "acc_flow", "acc_flow_se", "tab:green")
    positive = np.concatenate([flow[flow > 0], naive[naive > 0]]) if len(flow) or len(naive) else np.empty(0)
    # Wide temperature gaps give acceptances of 1e-9: only a log axis shows them moving.
    if positive.size and positive.min() < 1e-2:
        ax.set_yscale("log")
    else:
        ax.set_ylim(0.0, 1.02)
    _style(ax, "mean min(1, exp \u0394) per evaluation, \u00b1 block-bootstrap SE", "swap acceptance")
    if len(flow) or len(naive):
        _legend(ax)
    else:
        _no_data(ax, "no evaluation yet")


def _ess_panel(ax: Axes, history: History) -> None:
    e, f, sf = _points(history, "ess_fwd", "ess_fwd_se")
    e2, i, si = _points(history, "ess_inv", "ess_inv_se")
    _errorbar(ax, e, f, sf, "cold \u2192 hot (validation)", fmt="o-", color="tab:blue")
    _errorbar(ax, e2, i, si, "hot \u2192 cold (validation)", fmt="o-", color="tab:orange")
    _test_marks(ax, history, "ess_fwd", "ess_fwd_se", "tab:blue")
    _test_marks(ax, history, "ess_inv", "ess_inv_se", "tab:orange", label=False)
    ax.set_ylim(0.0, 102.0)
    _style(ax, "Kish ESS of the importance weights, \u00b1 SE", "ESS [% of samples]")
    if len(f) or len(i):
        _legend(ax)
    else:
        _no_data(ax, "no evaluation yet")


def _status(history: History, status: str | None) -> str:
    if status:
        return status
    return history.finished.status if history.finished is not None else "running"


def _mark_end(axes: Sequence[Axes], history: History, status: str) -> None:
    """A stopped or diverged run's panels say where it ended."""
    colour = _STATUS_COLOURS.get(status)
    if colour is None or not history.epochs:
        return
    epoch = history.finished.epoch if history.finished is not None else history.last_epoch
    for ax in axes:
        ax.axvline(epoch, color=colour, ls="--", lw=1, alpha=0.8)
        ax.text(epoch, 1.0, f" {status}", color=colour, fontsize=7, va="top", ha="left",
                transform=ax.get_xaxis_transform())


def _summary_lines(history: History, status: str) -> list[str]:
    lines = [f"status: {status}" + (f" at epoch {history.finished.epoch}" if history.finished else "")]
    fin = history.finished
    if fin is not None and fin.verdict:
        lines.append(_wrap(fin.verdict, 95))
    if fin is not None and fin.best_epoch >= 0 and math.isfinite(fin.best_score):
        lines.append(f"final model: best {fin.best_metric or 'validation KL'} {fin.best_score:.3g} kT at epoch "
                     f"{fin.best_epoch}")
    final = history.test("final")
    if final is not None:
        lines.append(f"test set ({final.n_pairs} pairs, independent MD run): flow-swap acceptance "
                     f"{final.acc_flow:.3f} \u00b1 {final.acc_flow_se:.3f} vs naive {final.acc_naive:.3g}")
        lines.append(f"  ESS {final.ess_fwd:.1f} \u00b1 {final.ess_fwd_se:.1f} % / {final.ess_inv:.1f} \u00b1 "
                     f"{final.ess_inv_se:.1f} %, KL {final.kl:.3g} kT")
    if fin is not None and fin.energy_evals:
        ranks = history.run.world_size if history.run is not None else 1
        over = f" (all {ranks} ranks)" if ranks > 1 else ""
        lines.append(f"cost: {fin.energy_evals:,} target energy evaluations{over}, {fin.elapsed_s / 60:.1f} min")
    if history.epochs:
        lines.append("good signs:")
        for c in checklist(history):
            since = f" (epoch {c.since_epoch})" if c.since_epoch is not None else ""
            lines.append(f"  {_MARKS[c.state]} {c.label}{since}")
    return lines


def _wrap(text: str, width: int) -> str:
    words, lines, line = text.split(), [], ""
    for w in words:
        if len(line) + len(w) + 1 > width:
            lines.append(line)
            line = "  " + w
        else:
            line = f"{line} {w}" if line else w
    lines.append(line)
    return "\n".join(lines)


def _default_title(history: History) -> str:
    run = history.run
    if run is None:
        return "molpt-tui training"
    return f"{run.preset or 'molpt-tui'}: {run.model}, {run.t_cold:.1f}K \u2192 {run.t_hot:.1f}K"


def _headline(history: History) -> str:
    """The claim of the figure: on the test set when there is one, else on validation (said)."""
    final = history.test("final") or history.test("untrained")
    if final is not None:
        what = "final model" if final.label == "final" else "untrained map"
        return (f"test set ({what}): flow-swap acceptance {final.acc_flow:.3g} \u00b1 {final.acc_flow_se:.2g} "
                f"vs naive {final.acc_naive:.3g}")
    blocks = [b for b in history.blocks if math.isfinite(b.acc_flow)]
    if not blocks:
        return ""
    last = blocks[-1]
    text = f"validation acceptance (epoch {last.epoch}): flow {last.acc_flow:.3g}"
    if math.isfinite(last.acc_naive):
        text += f" vs naive {last.acc_naive:.3g}"
    return text


def build_figure(history: History, title: str | None = None, status: str | None = None) -> Figure:
    x = history.epochs
    s = history.series
    state = _status(history, status)
    fig = Figure(figsize=(13, 17), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(4, 2)
    fwd, inv = {"color": "tab:blue"}, {"color": "tab:orange"}

    _plot_panel(axes[0, 0], x, [("training loss (epoch mean)", s["loss"], {"color": "black"})], "Total loss",
                "loss [kT]")
    _plot_panel(axes[0, 1], x, [
        ("forward: Fwd_E \u2212 Fwd LogDet", _diff(s["fwd_energy"], s["fwd_logdet"]), fwd),
        ("inverse: Inv_E \u2212 Inv LogDet", _diff(s["inv_energy"], s["inv_logdet"]), inv),
    ], "Forward vs inverse terms", "\u03b2\u00b7U \u2212 log|det J| [kT]")
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
    ], "log|det J|  forward / inverse", "log|det J| [nats]")
    _kl_panel(axes[2, 0], history)
    _acceptance_panel(axes[2, 1], history)
    _ess_panel(axes[3, 0], history)
    text_ax = axes[3, 1]
    text_ax.axis("off")
    text_ax.text(0.0, 1.0, "\n".join(_summary_lines(history, state)), va="top", ha="left", fontsize=8,
                 family="DejaVu Sans", transform=text_ax.transAxes, color=_STATUS_COLOURS.get(state, "black"))
    _mark_end([a for a in axes.flat if a is not text_ax], history, state)

    full_title = title if title is not None else _default_title(history)
    if state in _STATUS_COLOURS and f"({state})" not in full_title:
        full_title += f" ({state.upper()})"
    headline = _headline(history)
    if headline:
        full_title = f"{full_title}\n{headline}"
    fig.suptitle(full_title, fontsize=12, color=_STATUS_COLOURS.get(state, "black"))
    return fig


# --- several runs ------------------------------------------------------------------------------

_COMPARED: tuple[tuple[str, str, str, str], ...] = (
    # (source, field, title, y label); source "epoch": per-epoch series, "block": per evaluation
    ("epoch", "loss", "Total loss (training)", "loss [kT]"),
    ("block", "kl_val", "KL fwd+inv (validation)", "KL [kT]"),
    ("block", "acc_flow", "Flow-swap acceptance (validation; naive dashed)", "swap acceptance"),
    ("block", "ess_fwd", "ESS cold \u2192 hot (validation)", "ESS [% of samples]"),
    ("block", "ess_inv", "ESS hot \u2192 cold (validation)", "ESS [% of samples]"),
    ("epoch", "kl", "KL fwd+inv (training)", "KL [kT]"),
    ("epoch", "fwd_energy", "Fwd_E \u03b2_h\u00b7U(T x)", "\u03b2\u00b7U [kT]"),
    ("epoch", "inv_energy", "Inv_E \u03b2_c\u00b7U(T\u207b\u00b9 y)", "\u03b2\u00b7U [kT]"),
)


def build_comparison_figure(runs: Sequence[tuple[str, History]], title: str | None = None) -> Figure:
    """The same metric of each run overlaid; the legend names the runs."""
    fig = Figure(figsize=(13, 17), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(4, 2)
    colours = [f"C{i % 10}" for i in range(len(runs))]
    for ax, (source, key, panel_title, ylabel) in zip(axes.flat, _COMPARED):
        drawn: list[np.ndarray] = []
        for (name, history), colour in zip(runs, colours):
            if source == "epoch":
                xs, ys = _finite(history.epochs, history.series[key])
                if len(ys):
                    xd, yd = decimate(xs, ys)
                    ax.plot(xd, yd, color=colour, lw=1, label=name)
                    drawn.append(ys)
                continue
            e, v, s = _points(history, key, f"{key}_se")
            if len(v):
                _errorbar(ax, e, v, s, name, fmt="o-", color=colour)
                drawn.append(v)
            if key == "acc_flow":
                e0, v0, _ = _points(history, "acc_naive")
                if len(v0):
                    ax.plot(e0, v0, "--", color=colour, lw=1, alpha=0.7)
        if key.startswith("acc"):
            positive = np.concatenate([d[d > 0] for d in drawn]) if drawn else np.empty(0)
            if positive.size and positive.min() < 1e-2:
                ax.set_yscale("log")
        elif key.startswith("ess"):
            ax.set_ylim(0.0, 102.0)
        else:
            _set_yscale(ax, drawn)
        _style(ax, panel_title, ylabel)
        if drawn:
            _legend(ax)
        else:
            _no_data(ax)
    names = ", ".join(name for name, _ in runs)
    fig.suptitle(title or f"molpt-tui runs compared: {names}", fontsize=12)
    return fig


def _write_atomic(fig: Figure, path: Path) -> None:
    atomic_write_bytes(path, lambda fh: fig.savefig(fh, format="png"))


def _save(fig: Figure, path: Path) -> Path:
    with warnings.catch_warnings():
        # symlog/log axes with few points make matplotlib chatty; the PNG is still right.
        warnings.simplefilter("ignore", UserWarning)
        _write_atomic(fig, path)
    return path


def save_loss_curves(history: History, path: str | os.PathLike[str], title: str | None = None,
                     status: str | None = None) -> Path:
    """Render the run's figure to `path` (a directory gets the `png_name` file). `status`: how
    the run ended ("running" for a mid-run request); default: the history's Finished event."""
    path = Path(path)
    if path.is_dir():
        run = history.run
        path = path / (png_name(run.t_cold, run.t_hot) if run else DEFAULT_PNG)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fig = build_figure(history, title, status)
    return _save(fig, path)


def _history_of(run_dir: RunDirectory | str | os.PathLike[str],
                warn: Callable[[str], None] | None) -> tuple[RunDirectory, History]:
    """The run's history; a UserError when it holds no epoch yet (an empty figure says nothing)."""
    rd = run_dir if isinstance(run_dir, RunDirectory) else RunDirectory(run_dir)
    if not rd.metrics.is_file():
        raise FileNotFoundError(f"no {rd.metrics.name} in {rd.path}: is this a molpt-tui run directory?")
    events = list(read_events(rd.metrics, warn=warn))
    history = History.from_events(events)
    if not history.epochs:
        if any(isinstance(e, DataProgress) for e in events) and history.run is None:
            why = "the run is generating its data, or was stopped while it did"
        else:
            why = "the run stopped before its first evaluation" if history.finished else "training has not started"
        raise UserError(f"{rd.metrics}: no epoch logged yet ({why}); nothing to plot (`molpt-tui watch {rd.path}` "
                        "follows it)")
    return rd, history


def plot_run_dir(run_dir: RunDirectory | str | os.PathLike[str], path: str | os.PathLike[str] | None = None,
                 warn: Callable[[str], None] | None = None) -> Path:
    """Rebuild the PNG of a run from its metrics log (corrupt lines are skipped with a warning)."""
    rd, history = _history_of(run_dir, warn)
    if path is None:
        run = history.run
        path = rd.png(run.t_cold, run.t_hot) if run else rd.path / DEFAULT_PNG
    return save_loss_curves(history, path)


def plot_comparison(run_dirs: Sequence[RunDirectory | str | os.PathLike[str]], path: str | os.PathLike[str],
                    warn: Callable[[str], None] | None = None) -> Path:
    """One figure comparing runs; each is named by its directory (made unique when two share a name)."""
    runs: list[tuple[str, History]] = []
    for run_dir in run_dirs:
        rd, history = _history_of(run_dir, warn)
        name = rd.path.resolve().name or str(rd.path)
        taken = {n for n, _ in runs}
        if name in taken:
            name = str(rd.path)
        runs.append((name, history))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fig = build_comparison_figure(runs)
    return _save(fig, Path(path))
