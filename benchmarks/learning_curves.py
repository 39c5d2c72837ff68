"""Why `quickstart` misses its goal: validation learning curves and test acceptance vs data size.

    python benchmarks/learning_curves.py [--work science_table_work]
        [--table benchmarks/results/science_table_2core_cpu.json [more tables]]
        [--entries quickstart q_data80k q_120ep q_data80k_120ep]
        [--out benchmarks/results/quickstart_learning_curves] [--goal 0.80]
        [--series "one label for all entries"] [--title PRESET] [--reuse EARLIER.json]

Left: flow-swap acceptance on the validation split (± block-bootstrap SE) against training
steps, from each entry's `runs/<name>/metrics.jsonl` in the science-table work directory.
Right: test-set acceptance of the final model against training-data size (log2 axis), one series
per training length, from the science table's rows, with a least-squares line of acceptance vs
log2(samples) per length and where it would cross the goal. `--series LABEL` puts every entry in
one series instead (runs of one schedule stopped at different steps, each judged by its best
validated model). Writes `<out>.png` and `<out>.json`.
"""
from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

DEFAULT_ENTRIES = ["quickstart", "q_data80k", "q_120ep", "q_data80k_120ep"]


@dataclass
class DoublingFit:
    slope_per_doubling: float        # acceptance gained per doubling of the training data
    slope_se: float                  # from the points' SEs (NaN when none given)
    intercept: float                 # acceptance at log2(samples) = 0
    samples_at_goal: float | None    # where the line reaches the goal; None if it never does
    data_sizes: list[float]


def fit_doubling(samples: Sequence[float], acc: Sequence[float], goal: float,
                 se: Sequence[float] | None = None) -> DoublingFit | None:
    """Least-squares line of `acc` against log2(`samples`); None with fewer than two data sizes."""
    if len(samples) != len(acc) or len(set(samples)) < 2:
        return None
    x = [math.log2(s) for s in samples]
    mx, my = sum(x) / len(x), sum(acc) / len(acc)
    sxx = sum((xi - mx) ** 2 for xi in x)
    slope = sum((xi - mx) * (yi - my) for xi, yi in zip(x, acc)) / sxx
    slope_se = math.nan if se is None else math.sqrt(sum((xi - mx) ** 2 * s**2 for xi, s in zip(x, se))) / sxx
    intercept = my - slope * mx
    at_goal = 2.0 ** ((goal - intercept) / slope) if slope > 0 else None
    return DoublingFit(slope, slope_se, intercept, at_goal, sorted(set(float(s) for s in samples)))


def validation_curve(run_dir: Path) -> dict[str, Any]:
    """Validation acceptance per evaluation block of one finished run, against training steps."""
    from molpt_tui.training.history import History
    from molpt_tui.training.metrics_log import read_events

    h = History.from_events(read_events(run_dir / "metrics.jsonl"))
    if h.run is None:
        raise SystemExit(f"{run_dir}/metrics.jsonl: no run_started event")
    spe = h.run.steps_per_epoch
    return {"steps_per_epoch": spe, "batch": h.run.batch_size, "data_samples": h.run.data_samples,
            "status": h.finished.status if h.finished else "unfinished",
            "steps": [b.epoch * spe for b in h.blocks], "acc": [b.acc_flow for b in h.blocks],
            "se": [b.acc_flow_se for b in h.blocks]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("science_table_work"))
    ap.add_argument("--table", type=Path, nargs="+", default=[Path("benchmarks/results/science_table_2core_cpu.json")])
    ap.add_argument("--entries", nargs="+", default=DEFAULT_ENTRIES)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/quickstart_learning_curves"))
    ap.add_argument("--goal", type=float, default=0.80)
    ap.add_argument("--reuse", type=Path, nargs="*", default=[],
                    help="earlier <out>.json files: validation curves for entries whose run directory is gone")
    ap.add_argument("--series", default="", help="one series for all entries, with this label")
    ap.add_argument("--title", default="", help="what the figure is of (default: the entries' preset)")
    args = ap.parse_args(argv)

    rows = {r["name"]: r for table in args.table for r in json.loads(table.read_text())["rows"]}
    # validation curves of runs whose directories are gone, from an earlier output of this script
    earlier = {e["name"]: e["validation"] for path in args.reuse
               for e in json.loads(path.read_text())["entries"] if "validation" in e}
    entries: list[dict[str, Any]] = []
    for name in args.entries:
        run_dir, row = args.work / "runs" / name, rows.get(name)
        if row is None:
            print(f"{name}: no row in {', '.join(map(str, args.table))}; skipped")
            continue
        e: dict[str, Any] = {"name": name, **{k: row[k] for k in (
            "overrides", "steps", "batch", "data_samples", "test_acc_step0", "test_acc_final", "val_acc_step0",
            "val_acc_final", "preset", "best_epoch")}}
        e["series"] = args.series or f"{e['steps']:,} steps × {e['batch']}"
        if (run_dir / "metrics.jsonl").exists():
            e["validation"] = validation_curve(run_dir)
        elif name in earlier:
            e["validation"] = earlier[name]
        entries.append(e)
    if not entries:
        raise SystemExit("nothing to plot")

    # One fit per series (a training length, or --series) through the final test acceptance of each data size.
    fits: dict[str, Any] = {}
    for series in _series(entries):
        pts = [e for e in entries if e["series"] == series]
        fit = fit_doubling([e["data_samples"] for e in pts], [e["test_acc_final"][0] for e in pts], args.goal,
                           [e["test_acc_final"][1] for e in pts])
        fits[series] = None if fit is None else {
            **asdict(fit), "note": f"extrapolation of a straight line in log2(samples) from {len(fit.data_sizes)} "
                                   "data sizes; nothing measured says the trend stays straight beyond them"}

    for e in entries:
        t = e["test_acc_final"]
        test = f"test {t[0]:.3f} ± {t[1]:.3f} (step 0 {e['test_acc_step0'][0]:.3f})"
        val = e.get("validation")
        vtxt = f"val {val['acc'][0]:.3f} → {val['acc'][-1]:.3f} ± {val['se'][-1]:.3f}" if val else "no run found"
        print(f"{e['name']}: {e['data_samples']:,} samples, {e['steps']:,} steps × {e['batch']}: {test}; {vtxt}")
    for key, f in fits.items():
        if f is None:
            print(f"{key}: fewer than two data sizes, no fit")
            continue
        goal_txt = f"{f['samples_at_goal']:,.0f} samples" if f["samples_at_goal"] else "never (slope <= 0)"
        print(f"{key}: {f['slope_per_doubling']:+.4f} ± {f['slope_se']:.4f} per doubling; "
              f"{args.goal:.2f} at {goal_txt} (extrapolated from {len(f['data_sizes'])} data sizes)")

    title = args.title or ", ".join(sorted({e["preset"] for e in entries}))
    plot(entries, fits, args.goal, args.out.with_suffix(".png"), title)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(
        {"work": str(args.work), "table": [str(t) for t in args.table], "goal": args.goal, "entries": entries,
         "fits_test_acc_vs_log2_samples": fits}, indent=1) + "\n")
    print(f"wrote {args.out.with_suffix('.png')} and {args.out.with_suffix('.json')}")


def _series(entries: list[dict[str, Any]]) -> list[str]:
    """The series in the order of their training length."""
    return sorted({e["series"] for e in entries}, key=lambda s: min(e["steps"] for e in entries if e["series"] == s))


def _kilo(n: float) -> str:
    """1250 -> '1.25k', 80000 -> '80k', 4.6e6 -> '4.6M'."""
    return f"{n / 1e6:.3g}M" if n >= 1e6 else f"{n / 1000:.3g}k"


def plot(entries: list[dict[str, Any]], fits: dict[str, Any], goal: float, png: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({e["data_samples"] for e in entries})
    lengths = _series(entries)
    size_color = {s: f"C{i}" for i, s in enumerate(sizes)}
    length_style = {n: ("-", "--", ":", "-.")[i % 4] for i, n in enumerate(lengths)}
    length_marker = {n: "osD^v"[i % 5] for i, n in enumerate(lengths)}
    length_color = {n: f"C{i + len(sizes)}" for i, n in enumerate(lengths)}

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 5.6))
    for e in entries:
        v = e.get("validation")
        if v is None:
            continue
        c, ls = size_color[e["data_samples"]], length_style[e["series"]]
        band = [(a - s, a + s) for a, s in zip(v["acc"], v["se"])]
        ax1.fill_between(v["steps"], *zip(*band), color=c, alpha=0.12, lw=0)
        ax1.plot(v["steps"], v["acc"], color=c, ls=ls, marker=".", lw=1.6,
                 label=f"{e['name']}: {e['data_samples']:,} samples, {e['steps']:,} steps × {e['batch']}"
                       + (f", best at epoch {e['best_epoch']}" if e.get("best_epoch") is not None else ""))
    ax1.axhline(goal, color="k", ls=":", lw=1, label=f"goal {goal:.2f} (judged on the test set)")
    ax1.set_xlabel("training steps (epoch × steps per epoch)")
    ax1.set_ylabel("flow-swap acceptance, validation split")
    ax1.set_title("Validation acceptance during training (± SE)\n"
                  "validation pairs are the tail of each training trajectory", fontsize=11)
    ax1.legend(fontsize=8.5, loc="lower right")
    ax1.grid(alpha=0.3)

    step0_done: set[float] = set()
    for n in lengths:
        pts = sorted((e for e in entries if e["series"] == n), key=lambda e: e["data_samples"])
        xs = [e["data_samples"] for e in pts]
        ax2.errorbar(xs, [e["test_acc_final"][0] for e in pts], yerr=[e["test_acc_final"][1] for e in pts],
                     color=length_color[n], marker=length_marker[n], ms=7, ls="none", capsize=4,
                     label=f"final model, {n}")
        for e in pts:
            if e["data_samples"] not in step0_done:
                step0_done.add(e["data_samples"])
                ax2.errorbar(e["data_samples"], e["test_acc_step0"][0], yerr=e["test_acc_step0"][1], color="grey",
                             marker="x", ms=7, ls="none", capsize=4,
                             label="untrained map (step 0)" if len(step0_done) == 1 else None)
        f = fits.get(n)
        if f is not None:
            x_end = max(xs[-1], f["samples_at_goal"] or xs[-1]) * 1.15
            line_x = [xs[0] / 1.15, x_end]
            at = f", {goal:.2f} at ~{_kilo(f['samples_at_goal'])} samples" if f["samples_at_goal"] else ""
            ax2.plot(line_x, [f["intercept"] + f["slope_per_doubling"] * math.log2(x) for x in line_x],
                     color=length_color[n], ls="--", lw=1.2,
                     label=f"fit: {f['slope_per_doubling']:+.3f} ± {f['slope_se']:.3f}/doubling{at}")
            if f["samples_at_goal"]:
                ax2.plot(f["samples_at_goal"], goal, marker="|", ms=14, color=length_color[n])
    ax2.axhline(goal, color="k", ls="--", lw=1.3, label=f"goal {goal:.2f}")
    ax2.set_xscale("log", base=2)
    ax2.set_xlabel("training data: samples per temperature (log2 axis)")
    ax2.set_ylabel("flow-swap acceptance, independent test set")
    n_sizes = max((len(f["data_sizes"]) for f in fits.values() if f), default=0)
    ax2.set_title("Test acceptance vs training data (± SE)\n"
                  f"dashed: least-squares lines through {n_sizes} data sizes, extrapolated", fontsize=11)
    lo, hi = ax2.get_xlim()
    ticks = [sizes[0] * 2.0**k for k in range(-4, 40) if lo <= sizes[0] * 2.0**k <= hi]
    ticks = ticks[::max(1, math.ceil(len(ticks) / 10))]   # at most ten labels
    ax2.set_xticks(ticks, [_kilo(t) for t in ticks])
    ax2.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax2.legend(fontsize=8.5, loc="lower right", bbox_to_anchor=(1.0, 0.13))  # above the step-0 markers
    ax2.grid(alpha=0.3, which="both")
    if title:
        fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=130)
    plt.close(fig)


if __name__ == "__main__":
    main()
