"""Cost of the live checklist (training/checklist.py) against the length of a run.

The TUI recomputes it after new epochs and the headless summary once at the end, so its cost
over a long run matters. Side by side, interleaved: `checklist(history)` as shipped, and the
obvious way to get the same answer (each probe judged on its own slice, arrays rebuilt per
probe: what the checklist did before it converted the history once), for the sizes where the
latter finishes in reasonable time. Prints JSON.

    python benchmarks/bench_checklist.py [--epochs 400,10000,100000] [--repeat 3]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time

from molpt_tui.config.alerts import AlertThresholds
from molpt_tui.training.checklist import _SIGNS, CHECK_IDS, _view, checklist
from molpt_tui.training.events import EpochMetrics, LogBlock, RunStarted
from molpt_tui.training.history import History

# The per-probe way costs O(epochs x probes); beyond this it takes minutes.
REBUILD_UP_TO = 10_000


def synthetic(n: int) -> History:
    """A healthy run of `n` epochs logged with the prototype's adaptive schedule."""
    h = History()
    h.add(RunStarted(run_dir="r", preset="p", model="m", t_cold=300, t_hot=450, epochs=n, batch_size=8, lr=1e-3,
                     device="cpu", n_params=1, engine="openmm", warmup_epochs=5))
    for e in range(n + 1):
        h.add(EpochMetrics(epoch=e, loss=10 - 1e-4 * e, fwd_energy=5 - 1e-5 * e, fwd_logdet=0, inv_energy=-5,
                           inv_logdet=0, lr=1e-3 * min(1, (e + 1) / 5)))
        if e <= 10 or (e <= 100 and e % 10 == 0) or e % 100 == 0:
            h.add(LogBlock(epoch=e, loss=1.0, fwd_energy=0, fwd_logdet=0, inv_energy=0, inv_logdet=0, lr=1e-3,
                           improvement_pct=math.nan, kl_val=0.4 * math.exp(-e / 2000), kl_val_se=0.01,
                           acc_flow=0.6, acc_flow_se=0.01, acc_naive=0.1, acc_naive_se=0.01))
    return h


def rebuilt_per_probe(h: History) -> list[str]:
    """The same final states, each probe's arrays converted from the lists again."""
    th = AlertThresholds()
    probes = sorted({b.epoch for b in h.blocks} | {h.epochs[0], h.last_epoch}) if len(h.epochs) > 400 else h.epochs
    views = [_view(h, e, th) for e in probes]
    return [[_SIGNS[key][1](v, th) for v in views][-1][0] for key in CHECK_IDS]


def timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", default="400,10000,100000")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rows = []
    for n in (int(float(x)) for x in args.epochs.split(",")):
        h = synthetic(n)
        if n <= REBUILD_UP_TO:
            assert [c.state for c in checklist(h)] == rebuilt_per_probe(h)
        fast, slow = [], []
        for _ in range(args.repeat):  # interleaved, so a change in load hits both alike
            fast.append(timed(checklist, h))
            if n <= REBUILD_UP_TO:
                slow.append(timed(rebuilt_per_probe, h))
        row = {"epochs": n, "log_blocks": len(h.blocks), "checklist_ms": round(1e3 * statistics.median(fast), 1)}
        if slow:
            row["rebuilt_per_probe_ms"] = round(1e3 * statistics.median(slow), 1)
            row["ratio"] = round(statistics.median(slow) / statistics.median(fast), 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(json.dumps({"machine": platform.machine(), "cpus": os.cpu_count(), "load_avg": os.getloadavg(),
                      "python": platform.python_version(), "results": rows}))


if __name__ == "__main__":
    main()
