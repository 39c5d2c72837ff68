"""Any checkpoint of a finished run, judged on the run's independent test set.

    python benchmarks/checkpoints_on_test.py RUN_DIR last.pt [best.pt ...]

The trainer judges only its final model (the best validated epoch) on the test run. When the
validation split is not representative, that selection can keep an early epoch although later
ones are better on independent data; this prints the test-set flow-swap acceptance (± block
bootstrap SE), the naive acceptance and KL of each checkpoint named, with the trainer's own
evaluation on the run's own config (`RUN_DIR/config.toml`). Nothing is written.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    from molpt_tui.config import load_config
    from molpt_tui.physics.data import load_data
    from molpt_tui.physics.systems import system_from_config
    from molpt_tui.training.checkpoint import load_checkpoint
    from molpt_tui.training.evaluation import evaluate
    from molpt_tui.training.setup import build_setup, build_transport, resolve_device, split_data

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("checkpoints", nargs="+", help="file names in RUN_DIR, e.g. last.pt best.pt")
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args(argv)

    cfg = load_config(str(args.run_dir / "config.toml"), [])
    if cfg.test_n_samples <= 0:
        raise SystemExit(f"{args.run_dir}: the run has no test set (data.test_fraction = 0)")
    ms = system_from_config(cfg)
    split = split_data(cfg, load_data(cfg.data_path, ms), load_data(cfg.test_data_path, ms), cfg.test_data_path)
    with build_setup(cfg, ms, split, resolve_device("cpu"), log=lambda _t: None) as setup:
        for name in args.checkpoints:
            ckpt = load_checkpoint(args.run_dir / name)
            transport = build_transport(cfg, ms, split.cold_train, split.hot_train)
            transport.load_state_dict(ckpt["model"])
            ev = evaluate(transport, setup, args.batch, setup.test)
            print(f"{name} (epoch {ckpt['epoch']}): test flow-swap acceptance {ev.acc_flow:.3f} ± {ev.acc_flow_se:.3f}"
                  f" vs naive {ev.acc_naive:.3f}; KL {ev.kl_val:.3f} ± {ev.kl_val_se:.3f} kT ({ev.n_pairs} pairs of "
                  f"{cfg.test_data_path})")


if __name__ == "__main__":   # the OpenMM bridge's worker processes import this module again
    main()
