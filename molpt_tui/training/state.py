"""Everything a run changes as it trains, in one object that saves and restores as a whole.

`TrainingState.state_dict()` is the snapshot at an epoch boundary: checkpoints are always
written from such a snapshot, so a checkpoint taken mid-epoch (stop, signal, key press) is the
state of the last finished epoch, and resuming from it reproduces an uninterrupted run bit for
bit. The NaN guard rolls the weights back to the same snapshot.

The snapshot's keys are the checkpoint's training keys; `check_state_dict` is their schema, used
both by the checkpoint loader (before anything is loaded) and by `load_state_dict`.

With `training.ema_decay` the run keeps an exponential moving average of the weights beside the
ones the optimizer moves. The average is what is evaluated, selected and used, so a snapshot's
`model` holds it (every reader of a checkpoint gets the weights whose figures it reported); the
optimizer's weights travel as `train_model`, with the number of averaged steps, so a resume goes
on exactly.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import torch
from torch.optim.swa_utils import AveragedModel

from .alerts import AlertTracker
from .schedule import LRSchedule
from .schema import (
    SchemaError,
    as_byte_tensor,
    as_float,
    as_int,
    as_mapping,
    as_optional_int,
    as_tensor,
    required,
    tensor_table,
)

if TYPE_CHECKING:
    from ..config import Config
    from ..flows.transport import Transport

# The training keys of a checkpoint (it also holds format, config, system and versions).
STATE_KEYS: tuple[str, ...] = ("epoch", "model", "optimizer", "schedule", "best_score", "best_loss", "best_epoch",
                               "first_kl", "nan_failures", "alerts", "rng")
# Counters added later: a checkpoint without them loads with 0 (cost then counts from the resume).
OPTIONAL_STATE_KEYS: tuple[str, ...] = ("energy_evals", "elapsed_s")
# Only with training.ema_decay: the optimizer's weights (`model` is then their average) and
# the number of steps averaged.
EMA_STATE_KEYS: tuple[str, ...] = ("train_model", "ema_count")


def ema_weight(decay: float, n: int) -> float:
    """The weight of the n-th step (n >= 1) in the average: (1 - d) / (1 - d^n).

    This keeps the average exactly the bias-corrected exponential average (Adam's correction)
    sum_k (1 - d) d^(n-k) w_k / (1 - d^n): over the first steps it is nearly their plain mean, later
    it forgets with the stated decay; a plain exponential average from step 1 would be mostly
    the untrained map for about 1/(1 - d) steps.
    """
    return (1.0 - decay) / (1.0 - decay ** n) if decay > 0 else 1.0


def _ema_update(decay: float) -> Any:
    """AveragedModel's multi_avg_fn (it calls it with the number of steps averaged before)."""
    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor | int) -> None:
        weight = ema_weight(decay, int(n_averaged) + 1)
        for avg, now in zip(averaged, current, strict=True):
            avg.lerp_(now, weight)
    return update


@dataclass
class TrainingState:
    """The model, its optimizer and every counter that decides what the next step does."""

    transport: Transport
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    tracker: AlertTracker
    # Shuffling has its own generator so that its state can be checkpointed for exact resume.
    shuffle: torch.Generator
    epoch: int = 0                 # last completed epoch (0: the untrained map was evaluated)
    best_score: float = math.inf   # held-out KL of best.pt (training loss where that is not finite)
    best_loss: float = math.inf    # training loss of the epoch that gave best.pt
    best_epoch: int | None = None  # epoch of best.pt; None before the first finite evaluation
    first_kl: float = math.nan     # held-out KL of the untrained map: "improvement from start"
    nan_failures: int = 0          # consecutive non-finite steps
    energy_evals: int = 0          # target energy evaluations so far (steps, evaluations, epoch 0)
    elapsed_s: float = 0.0         # training wall time so far, all segments
    averaged: AveragedModel | None = None  # the moving average of the weights (training.ema_decay)

    @classmethod
    def create(cls, cfg: Config, transport: Transport) -> TrainingState:
        """A fresh state for `transport` from the config's training and alerts sections."""
        tc = cfg.training
        optimizer = torch.optim.AdamW(transport.flow.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
        schedule = LRSchedule(tc.lr, tc.epochs, tc.warmup_epochs, tc.schedule, tc.min_lr_factor)
        averaged = AveragedModel(transport, multi_avg_fn=_ema_update(tc.ema_decay)) if tc.ema_decay > 0 else None
        return cls(transport=transport, optimizer=optimizer, schedule=schedule, tracker=AlertTracker(cfg.alerts),
                   shuffle=torch.Generator().manual_seed(tc.seed), averaged=averaged)

    # --- the weights that are evaluated ------------------------------------------------------------
    @property
    def evaluated(self) -> Transport:
        """The map that validation, the test run and the saved models use: the moving average of
        the weights with training.ema_decay, else the weights as trained."""
        if self.averaged is None:
            return self.transport
        return cast("Transport", self.averaged.module)

    def after_step(self) -> None:
        """Fold the weights of the optimizer step just taken into the average."""
        if self.averaged is not None:
            self.averaged.update_parameters(self.transport)

    @property
    def ema_count(self) -> int:
        return 0 if self.averaged is None else int(self.averaged.n_averaged)

    def hold(self, model: Mapping[str, Any]) -> None:
        """Put the weights `model` (a snapshot's, e.g. the selected epoch's) in the evaluated map
        and the trained one alike: the end of a run evaluates and draws them."""
        self.transport.load_state_dict(model)
        if self.averaged is not None:
            self.averaged.module.load_state_dict(model)

    # --- snapshots -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """A deep copy: later steps do not change a snapshot taken now."""
        return {
            "epoch": self.epoch,
            "model": copy.deepcopy(self.evaluated.state_dict()),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "schedule": self.schedule.state_dict(),
            "best_score": self.best_score,
            "best_loss": self.best_loss,
            "best_epoch": self.best_epoch,
            "first_kl": self.first_kl,
            "nan_failures": self.nan_failures,
            "energy_evals": self.energy_evals,
            "elapsed_s": self.elapsed_s,
            "alerts": copy.deepcopy(self.tracker.state_dict()),
            "rng": {"shuffle": self.shuffle.get_state(), "torch": torch.get_rng_state()},
            **({} if self.averaged is None else {"train_model": copy.deepcopy(self.transport.state_dict()),
                                                 "ema_count": self.ema_count}),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a snapshot (of this run, or a validated checkpoint's).

        Raises `SchemaError` naming the key whose value is missing, ill-typed or does not fit this
        model (a tensor of another shape). The global torch RNG is set last, once everything else
        has been accepted.
        """
        check_state_dict(state)
        self.restore_weights(state)
        self.schedule.load_state_dict(state["schedule"])
        self.tracker.load_state_dict(state["alerts"])
        self.epoch = int(state["epoch"])
        self.best_score = float(state["best_score"])
        self.best_loss = float(state["best_loss"])
        self.best_epoch = None if state["best_epoch"] is None else int(state["best_epoch"])
        self.first_kl = float(state["first_kl"])
        self.nan_failures = int(state["nan_failures"])
        self.energy_evals = int(state.get("energy_evals", 0))
        self.elapsed_s = float(state.get("elapsed_s", 0.0))
        rng = state["rng"]
        try:
            self.shuffle.set_state(rng["shuffle"])
        except RuntimeError as exc:
            raise SchemaError("rng.shuffle", f"is not a state of this torch's generator ({_first_line(exc)})") from None
        if rng["torch"].numel() != torch.get_rng_state().numel():
            raise SchemaError("rng.torch", f"is not a state of this torch's generator ({rng['torch'].numel()} bytes, "
                                           f"expected {torch.get_rng_state().numel()})")
        torch.set_rng_state(rng["torch"])

    def restore_weights(self, state: Mapping[str, Any]) -> None:
        """Model and optimizer only (the NaN guard's rollback keeps counters and RNG running).

        A snapshot without `train_model` (no average was kept) trains on from `model`; an average
        that starts then starts from those weights.
        """
        trained = "train_model" if "train_model" in state else "model"
        _load_model(self.transport, state[trained], trained)
        if self.averaged is not None:
            _load_model(cast("Transport", self.averaged.module), state["model"], "model")
            self.averaged.n_averaged.fill_(int(state.get("ema_count", 0)) if trained == "train_model" else 0)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise SchemaError("optimizer", f"does not fit this model's optimizer ({_first_line(exc)})") from None
        _check_optimizer_shapes(self.optimizer)


def _load_model(transport: Transport, weights: Any, key: str) -> None:
    try:
        transport.load_state_dict(weights)
    except (RuntimeError, ValueError, KeyError) as exc:
        # TopologyError (a ValueError) for another molecule, RuntimeError for other shapes
        raise SchemaError(key, f"does not fit this model ({_first_line(exc)})") from None


def check_state_dict(state: Mapping[str, Any]) -> None:
    """The schema of a training snapshot: keys, types, finiteness. Raises `SchemaError`.

    Shapes against a model are checked when it is loaded (`TrainingState.load_state_dict`).
    """
    epoch = as_int(required(state, "epoch"), "epoch")
    tensor_table(required(state, "model"), "model")
    _check_optimizer_state(required(state, "optimizer"))
    schedule = as_mapping(required(state, "schedule"), "schedule")
    try:
        LRSchedule.parse_state(schedule)
    except SchemaError as exc:
        raise exc.within("schedule") from None
    # +inf is the "nothing better yet" start; NaN never is
    as_float(required(state, "best_score"), "best_score")
    as_float(required(state, "best_loss"), "best_loss")
    best_epoch = as_optional_int(required(state, "best_epoch"), "best_epoch")
    if best_epoch is not None and best_epoch > epoch:
        raise SchemaError("best_epoch", f"is {best_epoch}, after the checkpoint's epoch {epoch}")
    as_float(required(state, "first_kl"), "first_kl", allow_nan=True)  # NaN: the untrained map had no finite KL
    as_int(required(state, "nan_failures"), "nan_failures")
    if "energy_evals" in state:
        as_int(state["energy_evals"], "energy_evals", minimum=0)
    if "elapsed_s" in state:
        as_float(state["elapsed_s"], "elapsed_s", allow_inf=False)
    present = [key for key in EMA_STATE_KEYS if key in state]
    if present and len(present) < len(EMA_STATE_KEYS):
        missing = next(key for key in EMA_STATE_KEYS if key not in state)
        raise SchemaError(missing, f"is missing (the snapshot holds '{present[0]}', which comes with it)")
    if "train_model" in state:
        tensor_table(state["train_model"], "train_model")
        as_int(state["ema_count"], "ema_count", minimum=0)
    alerts = as_mapping(required(state, "alerts"), "alerts")
    try:
        AlertTracker.parse_state(alerts)
    except SchemaError as exc:
        raise exc.within("alerts") from None
    rng = as_mapping(required(state, "rng"), "rng")
    for name in ("shuffle", "torch"):
        try:
            as_byte_tensor(required(rng, name), name)
        except SchemaError as exc:
            raise exc.within("rng") from None


def _check_optimizer_state(value: object) -> None:
    """torch's optimizer state_dict: {"state": {int: {name: tensor | number}}, "param_groups": [...]}."""
    opt = as_mapping(value, "optimizer")
    per_param = as_mapping(required(opt, "state"), "optimizer.state")
    for index, entry in per_param.items():
        if isinstance(index, bool) or not isinstance(index, int):
            raise SchemaError("optimizer.state", f"has a key that is not a parameter index ({index!r})")
        for name, item in as_mapping(entry, f"optimizer.state.{index}").items():
            key = f"optimizer.state.{index}.{name}"
            if isinstance(item, torch.Tensor):
                as_tensor(item, key)
            else:
                as_float(item, key, allow_inf=False)
    groups = required(opt, "param_groups")
    if not isinstance(groups, list) or not groups:
        raise SchemaError("optimizer.param_groups", "must be a non-empty list")
    for i, group in enumerate(groups):
        where = f"optimizer.param_groups.{i}"
        table = as_mapping(group, where)
        params = table.get("params")
        if not isinstance(params, list) or not all(isinstance(p, int) and not isinstance(p, bool) for p in params):
            raise SchemaError(f"{where}.params", "must be a list of parameter indices")
        for name in ("lr", "weight_decay", "eps"):
            if name in table:
                as_float(table[name], f"{where}.{name}", allow_inf=False)


def _check_optimizer_shapes(optimizer: torch.optim.Optimizer) -> None:
    """torch loads moment estimates of any shape and fails only at the next step; refuse now."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            for name, value in optimizer.state.get(param, {}).items():
                if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape != param.shape:
                    raise SchemaError("optimizer", f"holds '{name}' of shape {tuple(value.shape)} for a parameter "
                                                   f"of shape {tuple(param.shape)}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:160] if text else type(exc).__name__
