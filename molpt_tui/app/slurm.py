"""The SLURM job a command runs in, when it runs in one: id, end of the allocation, requeues.

Read from the environment SLURM sets for every job step and, for the end time, from
`squeue -h -j $SLURM_JOB_ID -o %e` (the current limit, which `scontrol update` can move) with
`SLURM_JOB_END_TIME` as the fallback. Outside SLURM, or when squeue is missing, slow or says
"Unknown", the fields stay empty: nothing here can stop a run.
"""
from __future__ import annotations

import datetime as _dt
import math
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SQUEUE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class SlurmJob:
    job_id: str
    end_time: float = math.nan     # Unix time the allocation ends; NaN when unknown
    restart_count: int = 0         # SLURM_RESTART_COUNT: how often the job was requeued

    def fields(self) -> dict[str, Any]:
        """The `RunStarted` fields of this job."""
        return {"slurm_job_id": self.job_id, "slurm_end_time": self.end_time,
                "slurm_restart_count": self.restart_count}


def slurm_job_id(env: Mapping[str, str] | None = None) -> str:
    """SLURM_JOB_ID, "" outside SLURM (cheap: no squeue)."""
    return (os.environ if env is None else env).get("SLURM_JOB_ID", "").strip()


def slurm_job(env: Mapping[str, str] | None = None) -> SlurmJob | None:
    """This process's job, or None outside SLURM."""
    env = os.environ if env is None else env
    job_id = slurm_job_id(env)
    if not job_id:
        return None
    restarts = env.get("SLURM_RESTART_COUNT", "").strip()
    end = _squeue_end_time(job_id, env)
    if math.isnan(end):
        end = _number(env.get("SLURM_JOB_END_TIME", ""))
    return SlurmJob(job_id=job_id, end_time=end, restart_count=int(restarts) if restarts.isdigit() else 0)


def _squeue_end_time(job_id: str, env: Mapping[str, str]) -> float:
    squeue = shutil.which("squeue", path=env.get("PATH"))
    if squeue is None:
        return math.nan
    try:
        out = subprocess.run([squeue, "-h", "-j", job_id, "-o", "%e"], capture_output=True, text=True,
                             timeout=SQUEUE_TIMEOUT_S, env=dict(env), stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return math.nan
    if out.returncode != 0:
        return math.nan
    lines = out.stdout.strip().splitlines()
    return parse_end_time(lines[0]) if lines else math.nan


def parse_end_time(text: str) -> float:
    """squeue's %e ("2024-05-01T16:34:56", the cluster's local time) as Unix time; NaN for
    "Unknown", "N/A", "NONE" or anything else."""
    try:
        return _dt.datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        return math.nan


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        return math.nan
    return value if math.isfinite(value) and value > 0 else math.nan
