"""The science table: each preset trained under a stated budget, judged on its independent test set.

    python benchmarks/science_table.py [--entries quickstart ala2_reduced] [--work DIR]
                                       [--out benchmarks/results/science_table]

Each entry is a real `molpt-tui train --no-ui` run (data and its test run made on the way when
missing, in `--work`), read back from its metrics.jsonl. One row per entry: preset, parameters,
steps x batch, target energy evaluations, wall time, the flow-swap acceptance of the untrained
map (step 0) and of the final model on validation and on test (± block-bootstrap SE), the naive
acceptance of the test pairs, ESS in both directions and KL on the test set, and how many
independent samples the training data hold of their slowest backbone torsion. Writes
`<out>.json` and `<out>.md`.

Budgets are part of the entry: the preset as shipped, or with the overrides listed (fewer
epochs or samples to fit a 2-core machine). Say which when quoting a figure. Extra entries:
`--extra NAME PRESET KEY=VALUE ...` (repeatable).
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# name -> (preset, overrides, budget in words)
ENTRIES: dict[str, tuple[str, list[str], str]] = {
    "quickstart": ("quickstart", [], "as shipped"),
    "ala2_reduced": ("ala2_300_1000_vacuum", ["training.epochs=8", "training.steps_per_epoch=250",
                                              "training.warmup_epochs=1"],
                     "2,000 steps of batch 32 (LREX-like), data as shipped"),
    "ala2_cpu": ("ala2_300_1000_vacuum", [], "as shipped: 4,000 steps of batch 32, the CPU budget"),
}


def _read(run_dir: Path) -> dict[str, Any]:
    from molpt_tui.training.history import History
    from molpt_tui.training.metrics_log import read_events

    events = list(read_events(run_dir / "metrics.jsonl"))
    h = History.from_events(events)
    run, fin = h.run, h.finished
    assert run is not None and fin is not None, f"{run_dir}: the run did not start or finish"
    blocks = {b.epoch: b for b in h.blocks}
    first = blocks.get(0)
    best = blocks.get(fin.best_epoch)
    untrained, final = h.test("untrained"), h.test("final")
    reports = {r.split: r for r in h.data_reports}
    starts = [e for e in events if e.kind == "run_started"]
    epochs_trained = fin.epoch - starts[0].start_epoch

    def pair(obj: Any, key: str) -> list[float] | None:
        if obj is None:
            return None
        return [float(getattr(obj, key)), float(getattr(obj, f"{key}_se"))]

    train_data = reports.get("training data")
    return {
        "status": fin.status, "n_params": run.n_params, "steps": epochs_trained * run.steps_per_epoch,
        "batch": run.batch_size, "epochs": fin.epoch, "best_epoch": fin.best_epoch,
        "energy_evals": fin.energy_evals, "train_seconds": fin.elapsed_s,
        "val_acc_step0": pair(first, "acc_flow"), "val_acc_final": pair(best, "acc_flow"),
        "test_acc_step0": pair(untrained, "acc_flow"), "test_acc_final": pair(final, "acc_flow"),
        "test_acc_naive": pair(final or untrained, "acc_naive"),
        "test_ess_fwd": pair(final, "ess_fwd"), "test_ess_inv": pair(final, "ess_inv"),
        "test_kl": pair(final, "kl"), "test_pairs": final.n_pairs if final else 0,
        "data_samples": train_data.n_samples if train_data else 0,
        "data_independent": train_data.n_independent if train_data else math.nan,
        "data_slowest": train_data.slowest if train_data else "",
    }


def run_entry(name: str, preset: str, overrides: list[str], work: Path) -> dict[str, Any]:
    run_dir = work / "runs" / name
    data = work / "data" / f"{preset}.npz"
    args = [sys.executable, "-m", "molpt_tui.cli", "train", "--no-ui", "--preset", preset, "--out", str(run_dir),
            "--force", "--set", f"data.path={data}"]
    for item in overrides:
        args += ["--set", item]
    t0 = time.perf_counter()
    log = work / f"{name}.log"
    with open(log, "w") as fh:
        proc = subprocess.run(args, stdout=fh, stderr=subprocess.STDOUT, cwd=work, check=False)
    wall = time.perf_counter() - t0
    row = {"name": name, "preset": preset, "overrides": overrides, "exit_code": proc.returncode,
           "wall_seconds_with_data": wall, "log": str(log)}
    try:
        row.update(_read(run_dir))
    except (AssertionError, FileNotFoundError) as exc:
        row["error"] = str(exc)
    return row


def _pm(v: list[float] | None, digits: int = 3) -> str:
    if not v or not math.isfinite(v[0]):
        return "—"
    value, se = v
    if value >= 10 ** -digits or value == 0:
        return f"{value:.{digits}f} ± {se:.{digits}f}" if math.isfinite(se) else f"{value:.{digits}f}"
    return f"{value:.1e} ± {se:.1e}" if math.isfinite(se) else f"{value:.1e}"


def markdown(rows: list[dict[str, Any]], budgets: dict[str, str], machine: str) -> str:
    head = ("| entry (budget) | params | steps × batch | energy evals | train wall | data: samples (indep.) | "
            "acc. val step 0 → final | acc. test step 0 → final | naive (test) | ESS test fwd / inv % | "
            "KL test [kT] |")
    lines = [f"Measured {datetime.date.today().isoformat()} on {machine}.", "", head,
             "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['name']} ({budgets.get(r['name'], '')}) | failed: {r['error']} |")
            continue
        minutes = r["train_seconds"] / 60
        ess = f"{_pm(r['test_ess_fwd'], 1)} / {_pm(r['test_ess_inv'], 1)}"
        indep = r["data_independent"]
        lines.append(
            f"| {r['name']} ({budgets.get(r['name'], '')}; {r['status']}) | {r['n_params'] / 1e6:.2f} M | "
            f"{r['steps']:,} × {r['batch']} | {r['energy_evals'] / 1e6:.2f} M | {minutes:.1f} min | "
            f"{r['data_samples']:,} ({indep:.0f}) | {_pm(r['val_acc_step0'])} → {_pm(r['val_acc_final'])} | "
            f"{_pm(r['test_acc_step0'])} → {_pm(r['test_acc_final'])} | {_pm(r['test_acc_naive'])} | {ess} | "
            f"{_pm(r['test_kl'], 2)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", nargs="*", default=list(ENTRIES), help=f"of {list(ENTRIES)} (none: only --extra)")
    parser.add_argument("--extra", nargs="+", action="append", default=[], metavar="NAME PRESET KEY=VALUE",
                        help="another entry: a name, a preset and its overrides")
    parser.add_argument("--work", type=Path, default=Path("science_table_work"), help="data and run directories")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/science_table"))
    parser.add_argument("--machine", default=f"{platform.machine()} CPU, {os.cpu_count()} cores")
    args = parser.parse_args()
    entries = {name: ENTRIES[name] for name in args.entries}
    for extra in args.extra:
        name, preset, *overrides = extra
        entries[name] = (preset, overrides, " ".join(overrides) or "as shipped")
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "data").mkdir(exist_ok=True)
    rows = []
    for name, (preset, overrides, _) in entries.items():
        print(f"science table: {name} ({preset} {' '.join(overrides)})", file=sys.stderr, flush=True)
        rows.append(run_entry(name, preset, overrides, args.work.resolve()))
        print(json.dumps(rows[-1]), flush=True)
    budgets = {name: budget for name, (_, _, budget) in entries.items()}
    out = {"date": datetime.date.today().isoformat(), "machine": args.machine, "rows": rows, "budgets": budgets}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(out, indent=2))
    args.out.with_suffix(".md").write_text(markdown(rows, budgets, args.machine))
    print(markdown(rows, budgets, args.machine))


if __name__ == "__main__":
    main()
