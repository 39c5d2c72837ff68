"""How many CPUs a command uses, and how they are split between torch's threads and the OpenMM
worker processes, so that together they never ask for more CPUs than the process may use.

Why it matters: torch sizes its intra-op pool from the machine's cores and the OpenMM bridge
started a worker per core on top of it. On a shared 2-core machine with another job running, a
10-step epoch took 14-26 s that way and 1.4-1.9 s with one torch thread; on the same machine
quiet, the second torch thread bought 7 % of wall time for 35 % more CPU. An OpenMP pool waits at
every parallel region for its slowest thread, so one thread that has to share its core with
someone else stalls all of them.

The rule (`plan_threads`, a pure function):

- The budget is `--threads N` (or `OMP_NUM_THREADS`) when given, else the CPUs this process may
  use (`processes.count_cpus`: affinity mask, cgroup quota, `SLURM_CPUS_PER_TASK`), shared out
  among the ranks that torchrun started on the node.
- When nobody gave us those CPUs (the affinity mask is the whole machine: a workstation, a login
  node, a node shared without core binding) and under the live TUI (whose monitor redraws on the
  same CPUs), one CPU is left free. A budget that was asked for is used whole.
- The torch engine and the in-process OpenMM bridge run their energies between the flow's
  forward and backward passes, never alongside them, so torch gets every CPU of the budget. A
  bridge with worker processes gets half of it for the workers (only a batch costly enough to
  repay the pipes gets workers at all, and then at least two: one worker is the in-process
  bridge plus a pipe) and torch the rest.
- torch's inter-op pool gets one thread: nothing here runs inter-op parallel work.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import UserError
from ..physics.engines import EngineChoice
from ..processes import CpuCount, count_cpus

# "openmm-workers": the OpenMM bridge with worker processes; "openmm": in-process.
EngineKind = Literal["torch", "openmm", "openmm-workers"]


@dataclass(frozen=True)
class CpuBudget:
    cpus: int
    source: str        # where the number came from, for the run header
    dedicated: bool    # given to us (scheduler, cgroup, narrowed mask, or asked for)
    requested: bool    # --threads or OMP_NUM_THREADS: used whole, nothing left free


@dataclass(frozen=True)
class ThreadPlan:
    cpus: int
    source: str
    torch_threads: int
    interop_threads: int
    energy_workers: int    # OpenMM worker processes; 0: energies in this process
    reason: str            # one line: the budget, where it came from, and its split

    def fields(self) -> dict[str, Any]:
        """The `RunStarted` fields that record this plan."""
        return {"cpus": self.cpus, "cpus_source": self.source, "torch_threads": self.torch_threads,
                "torch_interop_threads": self.interop_threads, "energy_workers": self.energy_workers,
                "threads_reason": self.reason}


def check_threads(value: int | None, flag: str = "--threads") -> None:
    if value is not None and value < 1:
        raise UserError(f"{flag} {value}: must be at least 1 (or leave it out: the CPUs this process may use)")


def cpu_budget(requested: int | None = None, env: Mapping[str, str] | None = None,
               count: CpuCount | None = None, local_ranks: int = 1) -> CpuBudget:
    """The CPUs a command may use. `local_ranks`: processes of one distributed run on this node
    that see the same CPUs (torchrun starts them all in one allocation)."""
    check_threads(requested)
    env = os.environ if env is None else env
    if requested is not None:
        return CpuBudget(requested, f"--threads {requested}", dedicated=True, requested=True)
    omp = env.get("OMP_NUM_THREADS", "").strip()
    # torchrun sets OMP_NUM_THREADS=1 for every multi-process launch as a placeholder "to be
    # tuned by the application"; only a value the user chose is a request.
    torchrun_placeholder = omp == "1" and "TORCHELASTIC_RUN_ID" in env and local_ranks > 1
    if omp.isdigit() and int(omp) > 0 and not torchrun_placeholder:
        return CpuBudget(int(omp), f"OMP_NUM_THREADS={omp}", dedicated=True, requested=True)
    count = count if count is not None else count_cpus(env)
    if local_ranks > 1:
        share = max(1, count.cpus // local_ranks)
        return CpuBudget(share, f"{count.source}, {count.cpus} shared by {local_ranks} ranks on this node",
                         dedicated=count.dedicated, requested=False)
    return CpuBudget(count.cpus, count.source, dedicated=count.dedicated, requested=False)


def _spare(budget: CpuBudget, monitor: bool) -> int:
    """CPUs left free for others: see the module docstring."""
    if budget.requested or budget.cpus < 2:
        return 0
    return 1 if (not budget.dedicated or monitor) else 0


def worker_cpus(budget: CpuBudget, *, monitor: bool = False) -> int:
    """The CPUs the OpenMM bridge may give worker processes, should its batches repay them."""
    return plan_threads(budget, "openmm-workers", monitor=monitor).energy_workers


def plan_threads(budget: CpuBudget, engine: EngineKind, workers: int | None = None, *,
                 monitor: bool = False) -> ThreadPlan:
    """torch threads and OpenMM workers for `engine` within `budget`.

    `workers`: the bridge's actual worker count once it is built ("openmm-workers" only; it may
    be `energy.n_workers` as configured, which can exceed the budget: then torch keeps one
    thread and the reason says so). `monitor`: the live TUI shares these CPUs.
    """
    spare = _spare(budget, monitor)
    avail = budget.cpus - spare
    note = ""
    if engine == "openmm-workers":
        n_workers = workers if workers is not None else avail - max(1, avail // 2)
        n_workers = max(0, n_workers)
        torch_threads = max(1, avail - n_workers)
        if n_workers + torch_threads > avail:
            note = f" (more than the {avail} CPUs: energy.n_workers = {n_workers} was asked for)"
    else:
        n_workers, torch_threads = 0, avail
    where = {"torch": "energies in torch's threads", "openmm": "OpenMM energies in-process"}.get(
        engine, f"{n_workers} OpenMM worker process{'es' if n_workers != 1 else ''}")
    free = ""
    if spare:
        free = "1 left free for others, " if not budget.dedicated else "1 left free for the TUI, "
    reason = (f"{budget.cpus} CPU{'s' if budget.cpus != 1 else ''} from {budget.source}; "
              f"{free}torch {torch_threads} thread{'s' if torch_threads != 1 else ''}, {where}{note}")
    return ThreadPlan(cpus=budget.cpus, source=budget.source, torch_threads=torch_threads, interop_threads=1,
                      energy_workers=n_workers, reason=reason)


def plan_for(budget: CpuBudget, choice: EngineChoice, *, monitor: bool = False) -> ThreadPlan:
    """The plan for an engine as built: its kind and its actual worker processes."""
    if choice.engine.name == "torch":
        return plan_threads(budget, "torch", monitor=monitor)
    if choice.workers > 0:
        return plan_threads(budget, "openmm-workers", choice.workers, monitor=monitor)
    return plan_threads(budget, "openmm", monitor=monitor)


# torch.compile's C++ compiles run in a pool of worker processes sized to the whole machine; one
# the user sized through this variable is theirs to keep. The value we set is mirrored in a second
# variable, so a child process (the TUI's trainer, a data-parallel rank) that inherits it can
# tell it from the user's and size the pool to its own plan.
_COMPILE_THREADS = "TORCHINDUCTOR_COMPILE_THREADS"
_OUR_COMPILE_THREADS = "MOLPT_TUI_COMPILE_THREADS"


def _user_sized_compile_threads() -> bool:
    value = os.environ.get(_COMPILE_THREADS)
    return value is not None and value != os.environ.get(_OUR_COMPILE_THREADS)


def apply_threads(plan: ThreadPlan) -> ThreadPlan:
    """Size torch's pools, and the pool torch.compile compiles in. The intra-op pool can be
    resized at any time; the inter-op pool only before its first use, so this is called before
    torch does any work and again, for the intra-op pool alone, once the engine is known. Returns
    the plan as torch now runs it."""
    import sys

    import torch

    torch.set_num_threads(plan.torch_threads)
    if not _user_sized_compile_threads():
        inductor = sys.modules.get("torch._inductor.config")
        if inductor is not None:  # read at import: once imported, only the attribute counts
            inductor.compile_threads = plan.torch_threads  # type: ignore[attr-defined]
        os.environ[_COMPILE_THREADS] = os.environ[_OUR_COMPILE_THREADS] = str(plan.torch_threads)
    if torch.get_num_interop_threads() != plan.interop_threads:
        try:
            torch.set_num_interop_threads(plan.interop_threads)
        except RuntimeError:  # the pool already ran: it keeps its size, and the header says so
            pass
    interop = torch.get_num_interop_threads()
    if interop == plan.interop_threads:
        return plan
    return ThreadPlan(plan.cpus, plan.source, plan.torch_threads, interop, plan.energy_workers, plan.reason)
