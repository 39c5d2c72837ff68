"""The `[alerts]` section: thresholds of the alert rules and the rule identifiers.

The rules themselves live in `training.alerts`; their knobs are configuration, declared here so
that a bad threshold is a one-line error when the preset loads, not a traceback at epoch 1.
Units: kT for losses and energies, nats for log-dets, epochs are 1-based counts.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .settings import first_problem, setting

# Stable identifiers: presets, logs and the UI refer to rules by these names.
RuleId = Literal[
    "initial_loss_huge", "nonfinite_metric", "nonfinite_energies", "loss_rising", "inverse_diverging",
    "forward_diverging", "loss_stuck", "logdet_asymmetry", "grad_explosion", "acceptance_collapse", "overfitting",
    "diverged",
]
RULE_IDS: tuple[str, ...] = typing.get_args(RuleId)

INITIAL_LOSS_HUGE: RuleId = "initial_loss_huge"
NONFINITE_METRIC: RuleId = "nonfinite_metric"
NONFINITE_ENERGIES: RuleId = "nonfinite_energies"
LOSS_RISING: RuleId = "loss_rising"
INVERSE_DIVERGING: RuleId = "inverse_diverging"
FORWARD_DIVERGING: RuleId = "forward_diverging"
LOSS_STUCK: RuleId = "loss_stuck"
LOGDET_ASYMMETRY: RuleId = "logdet_asymmetry"
GRAD_EXPLOSION: RuleId = "grad_explosion"
ACCEPTANCE_COLLAPSE: RuleId = "acceptance_collapse"
OVERFITTING: RuleId = "overfitting"
DIVERGED: RuleId = "diverged"

# Epoch counts beyond any run `training.epochs` allows.
_EPOCHS = 10_000_000
# Ratios and energies far beyond anything meaningful; they only keep hostile values finite.
_BIG = 1e300


@dataclass
class AlertThresholds:
    """Knobs of the alert rules; the preset's ``[alerts]`` section maps 1:1 onto these fields.

    Defaults are tuned so a healthy, noisy, decaying run raises nothing.
    """

    initial_loss_max: float = field(default=1e15, metadata=setting(
        gt=0, le=_BIG, doc="initial_loss_huge: first finite loss above this [kT]"))

    rising_after_epoch: int = field(default=100, metadata=setting(
        ge=0, le=_EPOCHS, doc="loss_rising: only after this epoch, because warmup and early transients may rise"))
    rising_window: int = field(default=50, metadata=setting(
        ge=2, le=_EPOCHS, doc="loss_rising: trend fitted over the last this many epochs"))
    rising_min_rel: float = field(default=0.1, metadata=setting(
        ge=0, le=_BIG, doc="loss_rising: the fitted rise across the window must exceed this fraction of the "
                           "window's median |loss| ..."))
    rising_min_abs: float = field(default=1.0, metadata=setting(
        ge=0, le=_BIG, doc="... and this absolute amount, so losses near 0 kT do not trip on tiny rises [kT]"))
    rising_min_z: float = field(default=4.0, metadata=setting(
        ge=0, le=1e6, doc="... and be this many standard errors of the fitted rise, so a noisy plateau stays quiet"))
    rising_jump_factor: float = field(default=10.0, metadata=setting(
        gt=0, le=_BIG, doc="loss_rising also fires at once, from any epoch, when the loss is above its best by more "
                           "than this multiple of max(|best|, diverged_scale)"))

    divergence_window: int = field(default=20, metadata=setting(
        ge=2, le=_EPOCHS, doc="inverse_diverging / forward_diverging: compared across the last this many epochs"))
    divergence_min_rise: float = field(default=20.0, metadata=setting(
        ge=0, le=_BIG, doc="diverging: the diverging energy must rise by more than this [kT] ..."))
    divergence_rel_rise: float = field(default=1.0, metadata=setting(
        ge=0, le=_BIG, doc="... and by more than this fraction of its |value| at the start of the window"))

    stuck_after_epoch: int = field(default=500, metadata=setting(
        ge=0, le=_EPOCHS, doc="loss_stuck: from this epoch on ..."))
    stuck_loss: float = field(default=1000.0, metadata=setting(
        ge=-_BIG, le=_BIG, doc="... the median loss over the last `stuck_window` epochs is above this [kT]"))
    stuck_window: int = field(default=50, metadata=setting(ge=2, le=_EPOCHS, doc="loss_stuck: window [epochs]"))

    logdet_after_epoch: int = field(default=100, metadata=setting(
        ge=0, le=_EPOCHS, doc="logdet_asymmetry: from this epoch on ..."))
    logdet_window: int = field(default=50, metadata=setting(
        ge=2, le=_EPOCHS, doc="... over the last this many epochs ..."))
    logdet_asymmetry_ratio: float = field(default=0.5, metadata=setting(
        ge=0, le=_BIG, doc="... |mean fwd + mean inv| / max(|mean fwd|, |mean inv|, logdet_min_scale) above "
                           "this ratio"))
    # A floor of 0 would divide by zero for an identity map, whose log-dets are both 0.
    logdet_min_scale: float = field(default=1.0, metadata=setting(
        gt=0, le=_BIG, doc="... with this floor on the scale, so near-identity maps (log-dets ~ 0) do not trip "
                           "[nats]"))

    grad_explosion_factor: float = field(default=10.0, metadata=setting(
        gt=1, le=_BIG, doc="grad_explosion: latest grad norm above this multiple of the running median ..."))
    grad_window: int = field(default=50, metadata=setting(
        ge=2, le=_EPOCHS, doc="... of the previous this many finite grad norms ..."))
    grad_min_history: int = field(default=10, metadata=setting(
        ge=1, le=_EPOCHS, doc="... once at least this many exist"))

    acc_drop_factor: float = field(default=10.0, metadata=setting(
        gt=1, le=_BIG, doc="acceptance_collapse: latest flow acceptance below its best divided by this factor ..."))
    acc_min_best: float = field(default=1e-3, metadata=setting(
        ge=0, le=1, doc="... when that best was at least this (a probability); tinier ones are estimation noise"))
    acc_naive_margin: float = field(default=0.1, metadata=setting(
        ge=0, lt=1, doc="... or flow acceptance below naive * (1 - acc_naive_margin)"))

    overfit_min_rise: float = field(default=0.1, metadata=setting(
        ge=0, le=_BIG, doc="overfitting: held-out KL above its best by this much [kT] ..."))
    overfit_rel_rise: float = field(default=0.25, metadata=setting(
        ge=0, le=_BIG, doc="... and this fraction, while the training KL kept falling ..."))
    overfit_blocks: int = field(default=2, metadata=setting(
        ge=1, le=_EPOCHS, doc="... over the last this many log blocks"))

    stop_on_divergence: bool = field(default=True, metadata=setting(
        doc="diverged: end the run (status \"diverged\", exit code 3) once the verdict holds; false: alert only"))
    diverged_orders: float = field(default=2.0, metadata=setting(
        gt=0, le=300, doc="diverged: Fwd_E, Inv_E or the loss above its best by this many orders of magnitude of "
                          "max(|best|, diverged_scale) ..."))
    diverged_scale: float = field(default=10.0, metadata=setting(
        gt=0, le=_BIG, doc="... with this floor on the scale, so values near 0 kT do not trip [kT] ..."))
    diverged_epochs: int = field(default=3, metadata=setting(
        ge=1, le=_EPOCHS, doc="... (or not finite) in this many consecutive epochs"))

    rearm_epochs: int = field(default=5, metadata=setting(
        ge=0, le=_EPOCHS, doc="a raised rule re-arms once its condition has been absent this many epochs"))

    disabled: list[RuleId] = field(default_factory=list, metadata=setting(
        max_len=len(RULE_IDS) * 4, doc='rule ids to switch off, e.g. ["logdet_asymmetry"]'))

    def __post_init__(self) -> None:
        # Built in code (tests, `from_mapping`) the same declarations apply as at load.
        found = first_problem(self)
        if found is not None:
            name, exc = found
            fix = f" ({exc.fix})" if exc.fix else ""
            raise ValueError(f"alerts.{name}: {exc.problem}{fix}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | AlertThresholds) -> AlertThresholds:
        """Build from a preset's [alerts] table; a misspelt key is an error, not silently ignored.

        An `AlertThresholds` (what `Config.alerts` holds) is returned as it is.
        """
        if isinstance(data, AlertThresholds):
            return data
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown [alerts] key(s): {sorted(unknown)}; known: {sorted(names)}")
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def numeric(self) -> tuple[list[str], list[float]]:
        """The numeric (and boolean) thresholds as names and floats, the form a run's log records."""
        keys = [f.name for f in dataclasses.fields(self) if not isinstance(getattr(self, f.name), list)]
        return keys, [float(getattr(self, k)) for k in keys]

    @classmethod
    def from_numeric(cls, keys: Sequence[str], values: Sequence[float]) -> AlertThresholds:
        """Rebuild from `numeric`'s form as read back from a log: keys this version does not know,
        and values it would refuse (a log is not trusted input), keep their defaults."""
        out = cls()
        known = {f.name for f in dataclasses.fields(cls)}
        for key, value in zip(keys, values):
            current = getattr(out, key) if key in known else None
            if current is None or isinstance(current, list) or not math.isfinite(value):
                continue
            if isinstance(current, bool):
                candidate: Any = bool(value)
            elif isinstance(current, int):
                if value != int(value):
                    continue
                candidate = int(value)
            else:
                candidate = float(value)
            try:
                out = dataclasses.replace(out, **{key: candidate})
            except ValueError:  # outside the declared range
                continue
        return out
