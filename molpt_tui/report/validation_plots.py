"""Does what the map makes look physical? Ramachandran maps and energy histograms of data and of
mapped data, and backbone-state populations over MD time.

A map that collapses modes or tears molecules shows at once here, long before an acceptance
number explains why it is low: T^-1(hot data) should look like the cold data (the same basins,
the same weights), T(cold data) like the hot data, and beta*U of the mapped samples should
overlap that of the samples of the target temperature.

Figures use matplotlib's object API on an Agg canvas (no pyplot: thread-safe next to a TUI) and
are written through `fileio.atomic_write_bytes`.
"""
from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from ..fileio import atomic_write_bytes
from ..physics.torsions import Backbone, dihedrals

NO_BACKBONE_NOTE = "no peptide backbone found in the topology: energy histograms only"


@dataclass(frozen=True)
class ReducedEnergies:
    """beta*U (kT) of the four sets the energy histograms compare."""

    hot: np.ndarray            # beta_hot U(y), hot samples
    cold_to_hot: np.ndarray    # beta_hot U(T x)
    cold: np.ndarray           # beta_cold U(x), cold samples
    hot_to_cold: np.ndarray    # beta_cold U(T^-1 y)

    @classmethod
    def from_energies(cls, beta_cold: float, beta_hot: float, u_cold: np.ndarray, u_hot: np.ndarray,
                      u_cold_to_hot: np.ndarray, u_hot_to_cold: np.ndarray) -> ReducedEnergies:
        """From energies in kJ/mol and betas in mol/kJ."""
        return cls(hot=beta_hot * np.asarray(u_hot, dtype=float),
                   cold_to_hot=beta_hot * np.asarray(u_cold_to_hot, dtype=float),
                   cold=beta_cold * np.asarray(u_cold, dtype=float),
                   hot_to_cold=beta_cold * np.asarray(u_hot_to_cold, dtype=float))


@dataclass(frozen=True)
class PopulationSeries:
    """A backbone-state population estimated over a run: one line (with its error band)."""

    label: str                 # e.g. "flow PT (2 replicas)"
    total_ns: np.ndarray       # MD time of all replicas together at each point
    energy_evals: np.ndarray   # energy evaluations at each point
    mean: np.ndarray
    se: np.ndarray             # batch-means standard error (nan where unknown)


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    data = buf.getvalue()
    return atomic_write_bytes(path, lambda fh: fh.write(data))


def _rama(ax: Axes, positions: np.ndarray, backbone: Backbone, title: str) -> None:
    pair = backbone.pairs[0]
    x = np.asarray(positions, dtype=np.float64)
    finite = np.all(np.isfinite(x.reshape(len(x), -1)), axis=1) if len(x) else np.zeros(0, dtype=bool)
    x = x[finite]
    ax.set_title(f"{title} (n={len(x)})", fontsize=9)
    ax.set_xlim(-180, 180)
    ax.set_ylim(-180, 180)
    ax.set_xticks([-180, -90, 0, 90, 180])
    ax.set_yticks([-180, -90, 0, 90, 180])
    ax.set_xlabel(f"{pair.phi.label} (deg)", fontsize=8)
    ax.set_ylabel(f"{pair.psi.label} (deg)", fontsize=8)
    ax.axvline(0.0, color="0.7", lw=0.6)
    if len(x) == 0:
        ax.text(0, 0, "no finite samples", ha="center", va="center")
        return
    phi = np.degrees(dihedrals(x, pair.phi.atoms))
    psi = np.degrees(dihedrals(x, pair.psi.atoms))
    h, xe, ye = np.histogram2d(phi, psi, bins=72, range=[[-180, 180], [-180, 180]])
    h = np.where(h > 0, h, np.nan)
    ax.pcolormesh(xe, ye, h.T, norm=LogNorm(vmin=1, vmax=max(2.0, float(np.nanmax(h)))), cmap="viridis")
    frac = float(np.mean(phi > 0))
    ax.text(0.98, 0.02, f"φ>0: {frac:.3f}", transform=ax.transAxes, ha="right", va="bottom", fontsize=8,
            color="black", bbox={"facecolor": "white", "alpha": 0.7, "lw": 0})


def _energy_hist(ax: Axes, reference: np.ndarray, mapped: np.ndarray, ref_label: str, mapped_label: str,
                 xlabel: str) -> None:
    ref = np.asarray(reference, dtype=float)
    mp = np.asarray(mapped, dtype=float)
    ref_f, mp_f = ref[np.isfinite(ref)], mp[np.isfinite(mp)]
    n_bad = int(len(mp) - len(mp_f))
    if len(ref_f) == 0 and len(mp_f) == 0:
        ax.text(0.5, 0.5, "no finite energies", transform=ax.transAxes, ha="center")
        return
    # The range is the reference's bulk: a mapped outlier at 1e9 kT must not flatten the picture.
    base = ref_f if len(ref_f) else mp_f
    lo, hi = np.percentile(base, [0.5, 99.5])
    span = max(hi - lo, 1e-6)
    lo, hi = lo - 0.3 * span, hi + 0.6 * span
    bins = np.linspace(lo, hi, 61).tolist()
    beyond = int(np.sum((mp_f < lo) | (mp_f > hi)))
    ax.hist(ref_f, bins=bins, density=True, alpha=0.5, color="tab:blue", label=f"{ref_label} (n={len(ref_f)})")
    note = f", {beyond} beyond range" if beyond else ""
    note += f", {n_bad} non-finite" if n_bad else ""
    ax.hist(np.clip(mp_f, lo, hi), bins=bins, density=True, histtype="step", lw=1.5, color="tab:red",
            label=f"{mapped_label} (n={len(mp_f)}{note})")
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel("density", fontsize=8)
    ax.legend(fontsize=7, loc="upper right")


def write_validation_figure(path: str | Path, *, cold: np.ndarray, hot: np.ndarray, cold_to_hot: np.ndarray,
                            hot_to_cold: np.ndarray, energies: ReducedEnergies, backbone: Backbone | None,
                            t_cold: float, t_hot: float, title: str = "") -> Path:
    """The validation figure of a map on paired samples, written atomically to `path`.

    cold, hot: samples [M, N, 3] nm at t_cold and t_hot; cold_to_hot = T(cold),
    hot_to_cold = T^-1(hot) (any rigid frame: torsions and energies do not care). With a backbone
    (`physics.torsions.backbone_of_topology`) the first rows are Ramachandran maps of cold data vs
    T^-1(hot data) and hot data vs T(cold data); without one the figure says so and shows the
    energy histograms only.
    """
    return _save(validation_figure(cold=cold, hot=hot, cold_to_hot=cold_to_hot, hot_to_cold=hot_to_cold,
                                   energies=energies, backbone=backbone, t_cold=t_cold, t_hot=t_hot, title=title),
                 Path(path))


def validation_figure(*, cold: np.ndarray, hot: np.ndarray, cold_to_hot: np.ndarray, hot_to_cold: np.ndarray,
                      energies: ReducedEnergies, backbone: Backbone | None, t_cold: float, t_hot: float,
                      title: str = "") -> Figure:
    """The figure `write_validation_figure` writes."""
    peptide = backbone is not None and backbone.is_peptide
    rows = 3 if peptide else 1
    fig = Figure(figsize=(10, 3.6 * rows))
    axes = fig.subplots(rows, 2, squeeze=False)
    tc, th = f"{t_cold:g} K", f"{t_hot:g} K"
    if backbone is not None and peptide:
        _rama(axes[0][0], cold, backbone, f"cold data ({tc})")
        _rama(axes[0][1], hot_to_cold, backbone, f"T⁻¹(hot data) → {tc}")
        _rama(axes[1][0], hot, backbone, f"hot data ({th})")
        _rama(axes[1][1], cold_to_hot, backbone, f"T(cold data) → {th}")
    row = axes[rows - 1]
    _energy_hist(row[0], energies.hot, energies.cold_to_hot, f"hot data ({th})", "T(cold data)", f"β_hot·U ({th}, kT)")
    _energy_hist(row[1], energies.cold, energies.hot_to_cold, f"cold data ({tc})", "T⁻¹(hot data)",
                 f"β_cold·U ({tc}, kT)")
    heading = title or "map validation"
    if not peptide:
        heading += f"\n{NO_BACKBONE_NOTE}"
    fig.suptitle(heading, fontsize=10)
    fig.tight_layout()
    return fig


def write_populations_figure(path: str | Path, series: Sequence[PopulationSeries], state: str,
                             reference: float | None = None, reference_se: float | None = None,
                             title: str = "") -> Path:
    """A population against total MD time (left) and against energy evaluations (right), one line
    with a ±1 SE band per series; `reference` (a long run's value) as a horizontal line."""
    fig = Figure(figsize=(11, 4))
    ax_t, ax_e = fig.subplots(1, 2)
    colors = ["tab:red", "tab:blue", "tab:green", "tab:purple"]
    for k, s in enumerate(series):
        color = colors[k % len(colors)]
        m, se = np.asarray(s.mean, float), np.asarray(s.se, float)
        band = np.isfinite(se)
        for ax, x in ((ax_t, np.asarray(s.total_ns, float)), (ax_e, np.asarray(s.energy_evals, float))):
            ax.plot(x, m, color=color, lw=1.4, label=s.label)
            if band.any():
                ax.fill_between(x[band], (m - se)[band], (m + se)[band], color=color, alpha=0.2, lw=0)
    for ax, xlabel in ((ax_t, "total MD time, all replicas (ns)"), (ax_e, "energy evaluations")):
        if reference is not None and math.isfinite(reference):
            ax.axhline(reference, color="black", lw=1.0, ls="--", label=f"reference {reference:.4f}")
            if reference_se is not None and math.isfinite(reference_se):
                ax.axhspan(reference - reference_se, reference + reference_se, color="0.5", alpha=0.15, lw=0)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.set_ylabel(f"population {state}", fontsize=9)
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax_e.ticklabel_format(axis="x", style="sci", scilimits=(0, 3))
    fig.suptitle(title or f"population {state} at the cold temperature", fontsize=10)
    fig.tight_layout()
    return _save(fig, Path(path))
