"""Data-parallel training over several processes (PyTorch distributed: gloo on CPU, NCCL on GPU).

Started by the standard launchers, which describe each process in its environment: `torchrun`
(RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT) or, when those are
absent, `srun` (SLURM_PROCID, SLURM_STEP_NUM_TASKS / SLURM_NTASKS, SLURM_LOCALID, ...).

What every rank does, and why the ranks stay identical without ever exchanging weights:

- Batches: every rank holds the same shuffling generator (seeded by `training.seed`), draws the
  same permutation, and takes its own slice of each global batch, rank r the pairs
  [lo + r*B, lo + (r+1)*B) (the DistributedSampler way: rank-offset indices into one shared
  permutation). An epoch is one pass over the pairs in steps of B*W, and the state to checkpoint
  is one state, the same on every rank, so a resume with the same world size is exact.
- Energies are evaluated where the rank's flow lives; gradients are all-reduced (one flattened
  all-reduce per step, what DDP does without its module wrapper: the flow is called inside the
  transport). Each rank's loss is weighted by its share of the finite samples, so the reduced
  gradient is the gradient of the global mean, as one process with batch B*W would take it.
- Metrics are reduced as sums and counts (`reduce_terms`), never as averages of averages. The
  energy evaluations the trainer records are those of all ranks (`reduce_counts`, once per
  epoch and once per held-out evaluation): the run's cost, not one process's share of it.
- Decisions are agreed: at every step boundary one all-reduce carries each rank's stop request
  (a signal, the control channel), pause and checkpoint request (`between_steps`), so a SIGTERM or
  SIGUSR1 that reaches one rank stops all of them at the same step, none left waiting in a
  collective. Everything else the trainer decides (NaN guard, best epoch, alerts) is a function
  of these reduced numbers, hence the same on every rank.
- Held-out evaluation runs whole on every rank: the same numbers as one process, at the cost
  of one process (it does not scale with the ranks; it runs on the logging schedule only).

One process is a `Distributed` of world size 1 whose methods return their input unchanged,
so the trainer's single-process arithmetic is untouched.
"""
from __future__ import annotations

import datetime as _dt
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..errors import UserError
from .losses import DirectionTerms

if TYPE_CHECKING:
    from .control import TrainingControl

# How a stop is described when ranks agree on it; a later entry wins when ranks differ, so a
# cancel (SIGTERM) beats SLURM's requeue warning (SIGUSR1), which beats a user's stop.
STOP_REASONS = ("", "stop requested", "SIGUSR1", "SIGHUP", "SIGINT", "SIGTERM")
PAUSE_POLL_S = 0.2
DEFAULT_MASTER_PORT = 29500
# A collective waits this long for the slowest rank (a compile, a checkpoint write) before failing.
COLLECTIVE_TIMEOUT = _dt.timedelta(minutes=30)


@dataclass(frozen=True)
class RankInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    launcher: str = ""        # "torchrun", "srun" or "" (one process)
    master_addr: str = ""
    master_port: int = DEFAULT_MASTER_PORT


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name, "").strip()
    return int(text) if text.isdigit() else default


def slurm_tasks_on_node(tasks_per_node: str, node_id: int) -> int:
    """Tasks on node `node_id` from SLURM's compressed list, e.g. "4(x2),2" -> 4, 4, 2."""
    counts: list[int] = []
    for part in tasks_per_node.split(","):
        m = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
        if m is None:
            return 1
        counts += [int(m.group(1))] * int(m.group(2) or 1)
    return counts[node_id] if 0 <= node_id < len(counts) else 1


def rank_info(env: Mapping[str, str] | None = None) -> RankInfo:
    """Which rank of how many this process is, from the launcher's environment."""
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        world = _int(env, "WORLD_SIZE", 1)
        return RankInfo(rank=_int(env, "RANK", 0), world_size=world, local_rank=_int(env, "LOCAL_RANK", 0),
                        local_world_size=_int(env, "LOCAL_WORLD_SIZE", world), launcher="torchrun",
                        master_addr=env.get("MASTER_ADDR", ""),
                        master_port=_int(env, "MASTER_PORT", DEFAULT_MASTER_PORT))
    # SLURM_PROCID is set in srun's tasks, not in the batch script itself (where SLURM_NTASKS
    # is the job's and no other rank would ever come).
    if "SLURM_STEP_ID" in env and "SLURM_PROCID" in env:
        world = _int(env, "SLURM_STEP_NUM_TASKS", _int(env, "SLURM_NTASKS", 1))
        local_world = slurm_tasks_on_node(env.get("SLURM_STEP_TASKS_PER_NODE", env.get("SLURM_TASKS_PER_NODE", "1")),
                                          _int(env, "SLURM_NODEID", 0))
        return RankInfo(rank=_int(env, "SLURM_PROCID", 0), world_size=world, local_rank=_int(env, "SLURM_LOCALID", 0),
                        local_world_size=local_world, launcher="srun", master_addr=env.get("MASTER_ADDR", ""),
                        master_port=_int(env, "MASTER_PORT", DEFAULT_MASTER_PORT))
    return RankInfo()


class Distributed:
    """This process's place among the ranks, and the collectives the trainer needs."""

    def __init__(self, info: RankInfo | None = None) -> None:
        self.info = info or RankInfo()
        self.backend = ""
        self.device = torch.device("cpu")    # where the small tensors of the collectives live
        self.stop_signal: str | None = None  # the signal that stopped the run, on any rank
        self._local_signal: str | None = None
        self._checkpoint_pending = False
        self._started = False

    # --- who ---------------------------------------------------------------------------------
    @property
    def rank(self) -> int:
        return self.info.rank

    @property
    def world_size(self) -> int:
        return self.info.world_size

    @property
    def local_rank(self) -> int:
        return self.info.local_rank

    @property
    def local_world_size(self) -> int:
        return self.info.local_world_size

    @property
    def is_main(self) -> bool:
        """Rank 0: the only one that writes the run directory."""
        return self.info.rank == 0

    @property
    def active(self) -> bool:
        return self.info.world_size > 1

    def fields(self) -> dict[str, object]:
        """The `RunStarted` fields of the run's ranks."""
        return {"world_size": self.world_size, "dist_backend": self.backend}

    # --- the process group -------------------------------------------------------------------------
    def start(self, device: torch.device, env: Mapping[str, str] | None = None) -> None:
        """Join the process group: NCCL when the flow trains on CUDA, else gloo. A no-op for one
        process. The launcher's rendezvous (MASTER_ADDR/PORT) is read from the environment."""
        if not self.active or self._started:
            return
        import torch.distributed as dist

        env = os.environ if env is None else env
        cuda = device.type == "cuda"
        self.backend = "nccl" if cuda and dist.is_nccl_available() else "gloo"
        self.device = device if self.backend == "nccl" else torch.device("cpu")
        addr = self.info.master_addr or env.get("MASTER_ADDR", "")
        if not addr:
            raise UserError(f"rank {self.rank} of {self.world_size} ({self.info.launcher}): MASTER_ADDR is not set; "
                            "export it to the first node's host name before srun (see README: several nodes)")
        try:
            dist.init_process_group(self.backend, init_method=f"tcp://{addr}:{self.info.master_port}",
                                    rank=self.rank, world_size=self.world_size, timeout=COLLECTIVE_TIMEOUT)
        except (RuntimeError, ValueError) as exc:
            raise UserError(f"rank {self.rank} of {self.world_size}: cannot join the other ranks at "
                            f"{addr}:{self.info.master_port} ({str(exc).splitlines()[0][:160]})") from None
        self._started = True

    def close(self) -> None:
        if self._started:
            import torch.distributed as dist

            dist.destroy_process_group()
            self._started = False

    def barrier(self) -> None:
        if self._started:
            self._all_reduce(torch.zeros(1, dtype=torch.float64, device=self.device), "sum")

    # --- reductions --------------------------------------------------------------------------
    def _all_reduce(self, t: torch.Tensor, op: str) -> torch.Tensor:
        import torch.distributed as dist

        dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
        return t

    def reduce_sums(self, values: Sequence[float]) -> list[float]:
        """Elementwise sums over the ranks (float64; NaN propagates)."""
        if not self.active:
            return [float(v) for v in values]
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        return [float(v) for v in self._all_reduce(t, "sum").cpu()]

    def reduce_counts(self, values: Sequence[int]) -> list[int]:
        """Elementwise sums of counts over the ranks, exact (int64; float64 rounds above 2**53)."""
        if not self.active:
            return [int(v) for v in values]
        t = torch.tensor([int(v) for v in values], dtype=torch.int64, device=self.device)
        return [int(v) for v in self._all_reduce(t, "sum").cpu()]

    def reduce_max(self, values: Sequence[float]) -> list[float]:
        if not self.active:
            return [float(v) for v in values]
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        return [float(v) for v in self._all_reduce(t, "max").cpu()]

    def agree(self, flag: bool) -> bool:
        """True on every rank when it is True on any."""
        return bool(self.reduce_max([1.0 if flag else 0.0])[0] > 0)

    def all_reduce_grads(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Average the gradients over the ranks, in one flattened all-reduce (a parameter
        without a gradient on this rank counts as zeros)."""
        if not self.active:
            return
        ps = [p for p in params if p.requires_grad]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in ps]
        flat = torch.cat([g.reshape(-1) for g in grads])
        self._all_reduce(flat, "sum")
        flat /= self.world_size
        offset = 0
        for p, g in zip(ps, grads):
            n = g.numel()
            p.grad = flat[offset:offset + n].view_as(g).clone()
            offset += n

    def reduce_terms(self, fwd: DirectionTerms, inv: DirectionTerms, reference: float,
                     batch_size: int) -> tuple[DirectionTerms, DirectionTerms, float]:
        """The step's loss terms over all ranks' batches, as one process would compute them on
        the union of the batches: means over every finite sample (sums and counts), counts
        summed, the KL reference averaged (equal batches).

        Each returned `loss` has the global value and, as gradient, this rank's share of the
        global mean's gradient times the world size, so that `all_reduce_grads` (an average)
        yields the gradient of the global mean. A rank with no finite sample in a direction
        makes the step non-finite everywhere, and the NaN guard handles it on every rank alike.
        """
        if not self.active:
            return fwd, inv, reference
        n_f = batch_size - fwd.n_nonfinite
        n_i = batch_size - inv.n_nonfinite
        lf, li = float(fwd.loss.detach()), float(inv.loss.detach())

        def weighted(n: int, value: float) -> float:
            return n * value if n > 0 else math.nan

        sums = self.reduce_sums([
            weighted(n_f, lf), weighted(n_f, fwd.mean_energy), weighted(n_f, fwd.mean_logdet), n_f,
            weighted(n_i, li), weighted(n_i, inv.mean_energy), weighted(n_i, inv.mean_logdet), n_i,
            fwd.n_regularised, inv.n_regularised, fwd.n_nonfinite, inv.n_nonfinite, reference])
        (s_lf, s_ef, s_df, t_f, s_li, s_ei, s_di, t_i, reg_f, reg_i, bad_f, bad_i, s_ref) = sums

        def mean(total: float, count: float) -> float:
            return total / count if count > 0 else math.nan

        def term(local: DirectionTerms, n: int, total_n: float, s_l: float, s_e: float, s_d: float,
                 reg: float, bad: float) -> DirectionTerms:
            value = mean(s_l, total_n)
            if math.isfinite(value) and n > 0:
                share = self.world_size * n / total_n
                loss = local.loss * share + (value - share * float(local.loss.detach()))
            else:
                loss = local.loss * math.nan
            return DirectionTerms(loss, mean(s_e, total_n), mean(s_d, total_n), int(reg), int(bad))

        return (term(fwd, n_f, t_f, s_lf, s_ef, s_df, reg_f, bad_f),
                term(inv, n_i, t_i, s_li, s_ei, s_di, reg_i, bad_i), s_ref / self.world_size)

    # --- agreed decisions ------------------------------------------------------------------------
    def note_signal(self, name: str) -> None:
        """A job signal reached this rank (called from its signal handler)."""
        self._local_signal = self._local_signal or name

    def note_checkpoint(self) -> None:
        """A checkpoint was asked of a rank that does not write (SIGUSR1 outside SLURM)."""
        self._checkpoint_pending = True

    def between_steps(self, control: TrainingControl, service: Callable[[], None],
                      acknowledge: Callable[[], None]) -> bool:
        """Requests, pause and stop at a step boundary; True when the run must stop now.

        One process: serve requests, wait while paused, and stop when asked, as ever. Several:
        every rank runs the same loop, one all-reduce per turn, so all of them agree on the
        stop, wait together while rank 0 (the one reading the control channel) is paused, and
        hand a checkpoint request that reached another rank to rank 0.
        """
        if not self.active:
            service()
            control.wait_if_paused(service=service)
            acknowledge()
            return control.stop_requested
        while True:
            service()
            acknowledge()
            local = 0
            if control.stop_requested:
                local = STOP_REASONS.index(self._local_signal) if self._local_signal in STOP_REASONS else 1
            stop, paused, checkpoint = self.reduce_max([local, 1.0 if control.paused else 0.0,
                                                       1.0 if self._checkpoint_pending else 0.0])
            self._checkpoint_pending = False
            if checkpoint and self.is_main:
                control.request_checkpoint()
                service()
            if stop:
                reason = STOP_REASONS[int(stop)]
                if reason.startswith("SIG"):
                    self.stop_signal = self.stop_signal or reason
                if not control.stop_requested:
                    control.request_stop(f"received {reason} on another rank" if reason.startswith("SIG")
                                         else "stop requested on rank 0")
                acknowledge()
                return True
            if not paused:
                return False
            time.sleep(PAUSE_POLL_S)


# --- checkpoints ---------------------------------------------------------------------------------

# The checkpoint key that records the ranks a run was trained with (absent: one process).
CHECKPOINT_KEY = "distributed"


def record_ranks(payload: dict[str, object], world_size: int, batch_size: int) -> dict[str, object]:
    """`payload` with the world size it was trained with, so a resume can insist on it."""
    return dict(payload, **{CHECKPOINT_KEY: {"world_size": world_size, "batch_size_per_rank": batch_size}})


def checkpoint_world_size(ckpt: Mapping[str, object]) -> int:
    entry = ckpt.get(CHECKPOINT_KEY)
    size = entry.get("world_size") if isinstance(entry, Mapping) else None
    return size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else 1


def check_world_size(ckpt: Mapping[str, object], path: object, world_size: int) -> None:
    """A checkpoint resumes exactly only with the world size it was trained with: another one
    changes the batches each step sees, the steps per epoch and so the LR schedule."""
    saved = checkpoint_world_size(ckpt)
    if saved == world_size:
        return

    def ranks(n: int) -> str:
        return "one process" if n == 1 else f"{n} ranks"

    how = ("without torchrun or srun" if saved == 1
           else f"with {saved} ranks (torchrun --nproc-per-node {saved}, or srun with {saved} tasks)")
    raise UserError(f"{path}: this run was trained with {ranks(saved)} and this is {ranks(world_size)}; resume it "
                    f"{how}, or start a new run (--out) to train with {ranks(world_size)}")
