"""Any checkpoint of a finished run, judged on the run's independent test set.

    python benchmarks/checkpoints_on_test.py RUN_DIR last.pt [best.pt ...] [--by-state]

The trainer judges only its final model (the best validated epoch) on the test run. When the
validation split is not representative, that selection can keep an early epoch although later
ones are better on independent data; this prints the test-set flow-swap acceptance (± block
bootstrap SE), the naive acceptance and KL of each checkpoint named, with the trainer's own
evaluation on the run's own config (`RUN_DIR/config.toml`). Nothing is written.

`--by-state`: also the acceptance of the test pairs grouped by the backbone state (beta, alphaR,
phi > 0, cis of each peptide bond) of their hot and of their cold configuration, to see where a
map loses its swaps. A group's error bar is the block bootstrap over its pairs in time order.
"""
from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class StateGroup:
    side: str                 # "hot" or "cold": whose configuration is in the state
    state: str                # a name of Backbone.state_names()
    n_pairs: int
    evaluation: Any           # training.evaluation.Evaluation of the group; None when it is empty


@contextmanager
def opened_run(run_dir: Path) -> Iterator[tuple[Any, Any, Any, Any]]:
    """(config, molecular system, data split, training setup) of a finished run, as it trained."""
    from molpt_tui.config import load_config
    from molpt_tui.physics.data import load_data
    from molpt_tui.physics.systems import system_from_config
    from molpt_tui.training.setup import build_setup, resolve_device, split_data

    cfg = load_config(str(run_dir / "config.toml"), [])
    if cfg.test_n_samples <= 0:
        raise SystemExit(f"{run_dir}: the run has no test set (data.test_fraction = 0)")
    ms = system_from_config(cfg)
    split = split_data(cfg, load_data(cfg.data_path, ms), load_data(cfg.test_data_path, ms), cfg.test_data_path)
    with build_setup(cfg, ms, split, resolve_device("cpu"), log=lambda _t: None) as setup:
        yield cfg, ms, split, setup


def load_map(cfg: Any, ms: Any, split: Any, path: Path) -> tuple[Any, int]:
    """The transport of checkpoint `path` and its epoch."""
    from molpt_tui.training.checkpoint import load_checkpoint
    from molpt_tui.training.setup import build_transport

    ckpt = load_checkpoint(path)
    transport = build_transport(cfg, ms, split.cold_train, split.hot_train)
    transport.load_state_dict(ckpt["model"])
    return transport, int(ckpt["epoch"])


def state_groups(ms: Any, transport: Any, setup: Any, batch: int) -> list[StateGroup]:
    """The test pairs grouped by the backbone state of their hot, then of their cold configuration.
    Empty for a molecule without a peptide backbone."""
    import torch

    from molpt_tui.physics.torsions import backbone_of_topology
    from molpt_tui.training.evaluation import evaluate
    from molpt_tui.training.setup import Pairs

    backbone = backbone_of_topology(ms.topology)
    if not backbone.is_peptide:
        return []
    test = setup.test
    n = len(test)
    cold, hot, u_cold, u_hot = test.cold[:n], test.hot[:n], test.u_cold[:n], test.u_hot[:n]
    groups = []
    for side, configs in (("hot", hot), ("cold", cold)):
        states = backbone.state_indicators(configs.double().cpu().numpy())
        for k, name in enumerate(backbone.state_names()):
            idx = torch.from_numpy(states[:, k].nonzero()[0])
            group = Pairs(cold[idx], hot[idx], u_cold[idx], u_hot[idx])
            ev = evaluate(transport, setup, batch, group) if len(idx) else None
            groups.append(StateGroup(side, name, len(idx), ev))
    return groups


def main(argv: list[str] | None = None) -> None:
    from molpt_tui.training.evaluation import evaluate

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("checkpoints", nargs="+", help="file names in RUN_DIR, e.g. last.pt best.pt")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--by-state", action="store_true", help="acceptance per backbone state of the pairs")
    ap.add_argument("--min-pairs", type=int, default=20, help="smallest group --by-state reports")
    args = ap.parse_args(argv)

    with opened_run(args.run_dir) as (cfg, ms, split, setup):
        for name in args.checkpoints:
            transport, epoch = load_map(cfg, ms, split, args.run_dir / name)
            ev = evaluate(transport, setup, args.batch, setup.test)
            print(f"{name} (epoch {epoch}): test flow-swap acceptance {ev.acc_flow:.3f} ± {ev.acc_flow_se:.3f}"
                  f" vs naive {ev.acc_naive:.3f}; KL {ev.kl_val:.3f} ± {ev.kl_val_se:.3f} kT ({ev.n_pairs} pairs of "
                  f"{cfg.test_data_path})")
            if not args.by_state:
                continue
            groups = state_groups(ms, transport, setup, args.batch)
            if not groups:
                print("  (no peptide backbone: no states to group by)")
            for g in groups:
                where = f"  {g.side} configuration {g.state}: {g.n_pairs} pairs"
                if g.n_pairs < args.min_pairs:
                    print(f"{where} (fewer than {args.min_pairs}, not reported)")
                else:
                    gev = g.evaluation
                    print(f"{where} ({g.n_pairs / ev.n_pairs:.1%}), flow-swap acceptance {gev.acc_flow:.3f} ± "
                          f"{gev.acc_flow_se:.3f} vs naive {gev.acc_naive:.2g}")


if __name__ == "__main__":   # the OpenMM bridge's worker processes import this module again
    main()
