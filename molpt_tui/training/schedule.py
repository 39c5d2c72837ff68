"""Learning-rate schedules as functions of (fractional) epoch, plus a plateau reducer.

Linear warmup over `warmup_epochs`, then cosine decay to `min_lr_factor * lr`, or constant,
or plateau (reduce by `factor` after `patience` epochs without improvement). State is a
plain dict so a resumed run continues the very same schedule.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .schema import SchemaError, as_float, as_int, required


class LRSchedule:
    def __init__(self, lr: float, epochs: int, warmup_epochs: int, kind: str = "cosine",
                 min_lr_factor: float = 0.01, patience: int = 20, factor: float = 0.5) -> None:
        self.base_lr = lr
        self.epochs = max(1, epochs)
        self.warmup = max(0, warmup_epochs)
        self.kind = kind
        self.min_lr_factor = min_lr_factor
        self.patience = patience
        self.factor = factor
        self.scale = 1.0            # multiplied in by plateau reductions and NaN rollbacks
        self._best = math.inf
        self._bad_epochs = 0

    def lr_at(self, epoch: float) -> float:
        """epoch is 0-based and fractional (epoch + step / steps_per_epoch)."""
        if self.warmup and epoch < self.warmup:
            factor = min(1.0, (epoch + 1.0) / self.warmup)
        elif self.kind == "cosine":
            span = max(1, self.epochs - self.warmup)
            progress = min(1.0, max(0.0, (epoch - self.warmup) / span))
            factor = self.min_lr_factor + (1 - self.min_lr_factor) * 0.5 * (1 + math.cos(math.pi * progress))
        else:
            factor = 1.0
        return self.base_lr * factor * self.scale

    def end_epoch(self, loss: float) -> None:
        if self.kind != "plateau" or not math.isfinite(loss):
            return
        if loss < self._best - 1e-4 * abs(self._best):
            self._best = loss
            self._bad_epochs = 0
        else:
            self._bad_epochs += 1
            if self._bad_epochs > self.patience:
                self.scale = max(self.scale * self.factor, self.min_lr_factor)
                self._bad_epochs = 0

    def state_dict(self) -> dict[str, float | int]:
        return {"scale": self.scale, "best": self._best, "bad_epochs": self._bad_epochs}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Raises `SchemaError` naming the key of a missing or ill-typed value; sets nothing then."""
        self.scale, self._best, self._bad_epochs = self.parse_state(state)

    @staticmethod
    def parse_state(state: Mapping[str, Any]) -> tuple[float, float, int]:
        """(scale, best, bad_epochs) of a saved state, checked; a checkpoint is validated with
        this before anything is loaded."""
        scale = as_float(required(state, "scale"), "scale", allow_inf=False)
        if scale <= 0:
            raise SchemaError("scale", f"must be > 0, got {scale}")
        # best starts at +inf, before the first finite loss
        best = as_float(required(state, "best"), "best")
        return scale, best, as_int(required(state, "bad_epochs"), "bad_epochs")


def is_log_epoch(epoch: int, total: int, eval_interval: int) -> bool:
    """Adaptive logging: every epoch for 1-10, every 10 up to 100, every eval_interval after,
    and always the last epoch."""
    if epoch == total or epoch <= 10:
        return True
    if epoch <= 100:
        return epoch % 10 == 0
    return epoch % eval_interval == 0
