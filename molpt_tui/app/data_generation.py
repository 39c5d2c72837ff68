"""Replica-exchange data for a run, made before the run directory is touched.

Generation takes minutes, so it stops like training does: a job signal ends it at the next MD
chunk with a line saying so, the 128+n exit code, and no partial data file.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from ..config import Config
from ..physics.data import SimulationInterrupted, preflight_simulate, simulate
from ..training.exit_codes import signal_exit_code
from .signals import JobSignals
from .slurm import slurm_job_id


def generate_data(cfg: Config, announce: Callable[[str], None], out_path: Path | None = None,
                  force: bool = False, n_procs: int | None = None, missing: bool = False) -> int:
    """Run `simulate` for the data file and then for its independent test run (another seed,
    beside it); 0 when the files were written, 128+n when a signal stopped it.

    `missing`: make only the files that do not exist yet (what `train` needs), and say so.
    """
    path = out_path or cfg.data_path
    jobs: list[tuple[str, Config, Path | None]] = []
    if not missing or not path.exists():
        jobs.append(("data", cfg, out_path))
    if cfg.test_n_samples > 0:
        test_cfg = cfg.for_test_run(path)
        # an existing test run is kept unless --force: it may be shared by several data files
        if (force and not missing) or not test_cfg.data_path.exists():
            jobs.append(("test", test_cfg, None))
    # every destination is checked before any announcement or MD
    for _, job_cfg, job_out in jobs:
        preflight_simulate(job_cfg, job_out, force, n_procs)
    for what, job_cfg, job_out in jobs:
        job_path = job_out or job_cfg.data_path
        if what == "data" and missing:
            announce(f"Data file {job_path} is missing: generating it with replica-exchange MD "
                     f"(`molpt-tui simulate --preset {cfg.preset_name}`)")
        elif what == "test":
            announce(f"Test set {job_path}{' is missing' if missing else ''}: an independent replica-exchange run "
                     f"({job_cfg.data.n_samples} samples, seed {job_cfg.data.seed}; data.test_fraction, "
                     "data.test_seed)")
        code = _simulate_one(job_cfg, announce, job_out, force, n_procs)
        if code:
            return code
    return 0


def _simulate_one(cfg: Config, announce: Callable[[str], None], out_path: Path | None, force: bool,
                  n_procs: int | None) -> int:
    stop = threading.Event()
    path = out_path or cfg.data_path
    # under SLURM its warning (SIGUSR1) stops the MD too, with the code that asks for a requeue
    with JobSignals(on_stop=lambda name: stop.set(), requeue_on_usr1=slurm_job_id() != "") as signals:
        try:
            simulate(cfg, out_path=out_path, force=force, n_procs=n_procs, should_stop=stop.is_set)
        except SimulationInterrupted:
            name = signals.received or "SIGINT"
            announce(f"molpt-tui: {name} received while generating data: stopped; no data file was written "
                     f"({path})")
            return signal_exit_code(name)
        except KeyboardInterrupt:
            announce(f"molpt-tui: interrupted while generating data: stopped; no data file was written ({path})")
            return 130
    return 0
