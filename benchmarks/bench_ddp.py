"""Training throughput with 1 and 2 data-parallel ranks on CPU (gloo), side by side.

    python benchmarks/bench_ddp.py [--reps 2] [--epochs 4] [--steps 5] [--batch 64] [--preset quickstart]

Runs the same training (the preset's model, `--steps` steps per epoch) as `molpt-tui train
--no-ui` in three settings, interleaved within each repetition so that the machine's other load
hits them alike:

- "1 rank": one process, batch B;
- "2 ranks": `torchrun --nproc-per-node 2`, batch B per rank (2B pairs a step);
- "1 rank, 2B": one process with the 2-rank run's global batch.

Throughput is training pairs per second over the epochs after the first (which includes
warm-up): steps x batch x ranks / epoch seconds. Each process gets its share of the CPUs from
the thread plan (2 ranks on 2 CPUs: one thread each). Prints JSON with the medians and the
2-rank / 1-rank ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

DATA = ["data.n_samples=1000", "data.stride=20", "data.swap_every=20", "data.equilibration_ps=1.0"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(ranks: int, batch: int, args: argparse.Namespace, data: Path, work: Path) -> dict[str, Any]:
    run = Path(tempfile.mkdtemp(dir=work)) / "run"
    sets = [*DATA, f"data.path={data}", f"training.steps_per_epoch={args.steps}", "logging.eval_samples=64",
            "energy.engine=openmm", "energy.platform=Reference", "logging.eval_interval=1000"]
    train = ["-m", "molpt_tui", "train", "--preset", args.preset, "--no-ui", "--out", str(run), "--epochs",
             str(args.epochs), "--batch-size", str(batch), *[a for s in sets for a in ("--set", s)]]
    cmd = [sys.executable, *(["-m", "torch.distributed.run", "--nproc-per-node", str(ranks), "--master-port",
                              str(_free_port())] if ranks > 1 else []), *train]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k != "OMP_NUM_THREADS"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    if out.returncode != 0:
        raise SystemExit(f"{ranks} rank(s), batch {batch} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    started = next(e for e in events if e.get("kind") == "run_started")
    seconds = [e["seconds"] for e in events if e.get("kind") == "epoch" and e["epoch"] > 1]
    pairs = args.steps * batch * ranks
    return {"pairs_per_s": [pairs / s for s in seconds], "threads": started["torch_threads"],
            "world_size": started["world_size"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--preset", default="quickstart")
    args = parser.parse_args()

    from molpt_tui.app.data_generation import generate_data
    from molpt_tui.config import load_config

    settings = {"1 rank": (1, args.batch), "2 ranks": (2, args.batch), "1 rank, 2B": (1, 2 * args.batch)}
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in settings}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "data.npz"
        if generate_data(load_config(args.preset, [*DATA, f"data.path={data}"]), announce=lambda text: None,
                         missing=True):
            raise SystemExit("data generation was interrupted")
        for rep in range(args.reps):
            names = list(settings) if rep % 2 == 0 else list(reversed(settings))
            for name in names:
                row = _run(*settings[name], args, data, work)
                rows[name].append(row)
                print(f"rep {rep} {name}: {statistics.median(row['pairs_per_s']):.0f} pairs/s "
                      f"({row['threads']} torch thread(s) per rank)", file=sys.stderr, flush=True)
    result: dict[str, Any] = {"preset": args.preset, "batch_per_rank": args.batch, "steps_per_epoch": args.steps,
                              "cpus": os.cpu_count(), "loadavg": list(os.getloadavg()), "settings": {}}
    for name, runs in rows.items():
        rates = [r for row in runs for r in row["pairs_per_s"]]
        result["settings"][name] = {"pairs_per_s": round(statistics.median(rates), 1),
                                    "torch_threads_per_rank": runs[0]["threads"], "ranks": runs[0]["world_size"]}
    s = result["settings"]
    result["two_ranks_over_one"] = round(s["2 ranks"]["pairs_per_s"] / s["1 rank"]["pairs_per_s"], 2)
    result["two_ranks_over_one_2B"] = round(s["2 ranks"]["pairs_per_s"] / s["1 rank, 2B"]["pairs_per_s"], 2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
