"""Redraw cost of the monitor's four plot panes versus the number of recorded epochs.

Runs the real MonitorApp headless at a given terminal size, loads N epochs of synthetic
metrics into its state, and times `render()` of each plot pane (decimation + plotext build,
exactly what a redraw does). Also times the incremental numpy sync after a batch of new epochs
and, side by side, plotext on undecimated data for the sizes where that finishes in reasonable
time. Prints JSON.

    python benchmarks/bench_tui.py [--sizes 160x48,80x24] [--points 1e4,1e5,1e6] [--repeat 15]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import tempfile
import time

import numpy as np

from molpt_tui.training.run_dir import RunDirectory
from molpt_tui.tui.app import MonitorApp
from molpt_tui.tui.series import BASE_KEYS
from molpt_tui.tui.source import WatchedRun
from molpt_tui.tui.widgets import MetricPlot

GOAL_MS = 30.0


def synthetic(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    e = np.arange(1, n + 1, dtype=float)
    scale = max(n / 50.0, 1.0)
    data = {
        "fwd_energy": 60 + 5e3 * np.exp(-e / scale) + rng.standard_normal(n),
        "fwd_logdet": -20 + 30 * (1 - np.exp(-e / (3 * scale))) + 0.1 * rng.standard_normal(n),
        "inv_energy": 55 + 1e5 * np.exp(-e / scale) + rng.standard_normal(n),
        "inv_logdet": 18 - 25 * (1 - np.exp(-e / (3 * scale))) + 0.1 * rng.standard_normal(n),
    }
    data["loss"] = data["fwd_energy"] - data["fwd_logdet"] + data["inv_energy"] - data["inv_logdet"]
    data["lr"] = 1e-3 * np.minimum(1.0, e / 5.0) * (0.5 + 0.5 * np.cos(np.pi * e / n)) + 1e-5
    data["kl"] = data["loss"] - 100.0
    # A few non-finite values, as a diverging run produces; the plots must drop them.
    data["inv_energy"][n // 3] = np.inf
    data["loss"][n // 3] = np.nan
    return data


def load(app: MonitorApp, n: int) -> None:
    from molpt_tui.training.events import LogBlock

    data = synthetic(n)
    history = app.state.history
    history.epochs = list(range(1, n + 1))
    for key in BASE_KEYS:
        history.series[key] = data[key].tolist()
    # Held-out evaluations on the adaptive schedule: ~200 log blocks whatever n.
    step = max(n // 200, 1)
    history.blocks = [LogBlock(epoch=e, loss=1.0, fwd_energy=1.0, fwd_logdet=0.0, inv_energy=1.0, inv_logdet=0.0,
                               lr=1e-3, improvement_pct=50.0, acc_flow=0.3 + 0.1 * e / n, acc_naive=0.136,
                               ess_fwd=20.0, ess_inv=15.0, kl=float(data["kl"][e - 1]),
                               kl_val=float(data["kl"][e - 1]) + 1,
                               acc_flow_se=0.01, acc_naive_se=0.005, ess_fwd_se=1.0, ess_inv_se=1.0, kl_val_se=0.5)
                      for e in range(1, n + 1, step)]
    app.state.evals.rebuild(history.blocks)
    app.state.store.sync(history, 0)
    app.state.versions["data"] += 1
    app.state.versions["blocks"] += 1


def time_panes(plots: list[MetricPlot], repeat: int) -> tuple[list[float], list[float], dict[str, float]]:
    """Wall and CPU (this thread) milliseconds per full redraw of the panes. On a shared,
    loaded machine wall time includes waiting for a core; CPU time is what a redraw costs."""
    totals, cpu_totals, per_pane = [], [], {p.id: [] for p in plots}
    for _ in range(repeat):
        total = 0.0
        c0 = time.thread_time()
        for plot in plots:
            t0 = time.perf_counter()
            plot.render()
            dt = (time.perf_counter() - t0) * 1e3
            per_pane[plot.id].append(dt)
            total += dt
        cpu_totals.append((time.thread_time() - c0) * 1e3)
        totals.append(total)
    return totals, cpu_totals, {k: round(statistics.median(v), 2) for k, v in per_pane.items()}


def time_naive(plot: MetricPlot, app: MonitorApp, repeat: int) -> float:
    """plotext fed every finite point (what the panes would cost without decimation)."""
    store = app.state.store
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        from textual_plotext.plot import Plot

        plt = Plot()
        for s in plot.spec.series:
            if s.evaluation:
                continue
            x, y = store.view(s.key)
            ok = np.isfinite(y)
            plt.plot(x[ok].tolist(), y[ok].tolist(), marker="braille")
        plt.plotsize(plot.size.width, plot.size.height)
        plt.build()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


async def bench_size(width: int, height: int, points: list[int], repeat: int, naive_max: int) -> dict:
    tmp = tempfile.mkdtemp()
    app = MonitorApp(WatchedRun(RunDirectory(tmp)), refresh_hz=0.2)  # fed by load() below, not a file
    results = []
    async with app.run_test(size=(width, height)) as pilot:
        await pilot.pause(0.2)
        plots = [p for p in app.query(MetricPlot) if p.display]
        for n in points:
            load(app, n)
            app.refresh_now()
            await pilot.pause(0.05)
            for p in plots:
                p.render()  # warm caches (theme registration, first allocations)
            totals, cpu, per_pane = time_panes(plots, repeat)
            app.log_y = True
            app.refresh_now()
            log_totals, _, _ = time_panes(plots, max(3, repeat // 3))
            app.log_y = False
            app.refresh_now()
            # One batch of 50 new epochs on top of n: what an EventBatch costs the numpy mirror.
            history = app.state.history
            for key in BASE_KEYS:
                history.series[key].extend([1.0] * 50)
            history.epochs.extend(range(n + 1, n + 51))
            t0 = time.perf_counter()
            app.state.store.sync(history, n)
            sync_ms = (time.perf_counter() - t0) * 1e3
            entry = {
                "points": n,
                "redraw_ms_median": round(statistics.median(totals), 2),
                "redraw_ms_max": round(max(totals), 2),
                "redraw_cpu_ms_median": round(statistics.median(cpu), 2),
                "per_pane_ms": per_pane,
                "redraw_log_y_ms_median": round(statistics.median(log_totals), 2),
                "points_plotted": sum(p.points_plotted for p in plots),
                "sync_50_new_epochs_ms": round(sync_ms, 3),
            }
            if n <= naive_max:
                naive = sum(time_naive(p, app, 1) for p in plots)
                entry["undecimated_ms"] = round(naive, 1)
                entry["speedup_vs_undecimated"] = round(naive / statistics.median(totals), 1)
            results.append(entry)
        panes = {p.id: f"{p.size.width}x{p.size.height}" for p in plots}
    return {"terminal": f"{width}x{height}", "panes": panes, "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="160x48,80x24")
    parser.add_argument("--points", default="1e4,1e5,1e6")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--naive-max", type=float, default=1e4,
                        help="largest N also timed without decimation (slow: ~linear in N)")
    args = parser.parse_args()
    points = [int(float(p)) for p in args.points.split(",")]
    report = {
        "benchmark": "molpt-tui plot pane redraw",
        "goal_ms_at_1e6": GOAL_MS,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "sizes": [],
    }
    for size in args.sizes.split(","):
        w, h = (int(v) for v in size.lower().split("x"))
        report["sizes"].append(asyncio.run(bench_size(w, h, points, args.repeat, int(args.naive_max))))
    at_1e6 = [r for s in report["sizes"] for r in s["results"] if r["points"] == 1_000_000]
    if at_1e6:
        report["meets_goal_at_1e6_wall"] = all(r["redraw_ms_median"] <= GOAL_MS for r in at_1e6)
        report["meets_goal_at_1e6_cpu"] = all(r["redraw_cpu_ms_median"] <= GOAL_MS for r in at_1e6)
    try:
        import os

        report["load_average"] = [round(v, 2) for v in os.getloadavg()]
        report["cpu_count"] = os.cpu_count()
    except OSError:
        pass
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
