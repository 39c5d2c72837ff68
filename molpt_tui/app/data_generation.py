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
    """Run `simulate`; 0 when the file was written, 128+n when a signal stopped it."""
    stop = threading.Event()
    path = out_path or cfg.data_path
    preflight_simulate(cfg, out_path, force, n_procs)  # a bad destination fails before any announcement
    if missing:
        announce(f"Data file {path} is missing: generating it with replica-exchange MD "
                 f"(`molpt-tui simulate --preset {cfg.preset_name}`)")
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
