"""Warning signs of an unhealthy run, as pure functions over a `History`.

Each rule looks at the history as it stands and returns zero or more `Alert` events; nothing
here keeps state or touches the trainer, so the same rules serve the live trainer, `watch`
(replaying a metrics log) and tests. `AlertTracker` is the only stateful piece: it turns the
"condition holds now" answers into "tell the user once" so a UI is not spammed every epoch.

Units: losses and energies are beta*U in kT (means per sample over an epoch), log-dets are in
nats (dimensionless, the same scale as kT in the loss), epochs are 1-based counts.
"""
from __future__ import annotations

import math
import shlex
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from ..config.alerts import (  # the [alerts] schema; re-exported for callers of this module
    ACCEPTANCE_COLLAPSE,
    DIVERGED,
    FORWARD_DIVERGING,
    GRAD_EXPLOSION,
    INITIAL_LOSS_HUGE,
    INVERSE_DIVERGING,
    LOGDET_ASYMMETRY,
    LOSS_RISING,
    LOSS_STUCK,
    NONFINITE_ENERGIES,
    NONFINITE_METRIC,
    OVERFITTING,
    AlertThresholds,
)
from ..config.alerts import RULE_IDS as RULE_IDS  # re-exported: callers read the rule ids here
from .events import Alert, Severity
from .history import History
from .schema import SchemaError, as_int, as_mapping, as_optional_int, as_str, required
from .verdict import divergence, exploded_mask

HINTS: dict[str, str] = {
    INITIAL_LOSS_HUGE: (
        "Check the units and the structure (PDB vs force field), use the internal-coordinate "
        "representation, and lower the learning rate."
    ),
    NONFINITE_METRIC: (
        "Lower the learning rate to 1e-4, enable (or lower) the energy regularisation threshold, "
        "and check the structure."
    ),
    NONFINITE_ENERGIES: (
        "Enable (or lower) the energy regularisation threshold, lower the learning rate to 1e-4, "
        "and check the structure."
    ),
    INVERSE_DIVERGING: (
        "Lower the learning rate to 1e-4, increase the warmup, use a larger preset (more "
        "capacity), and give it more data at the hot temperature."
    ),
    FORWARD_DIVERGING: (
        "Lower the learning rate to 1e-4, increase the warmup, use a larger preset (more "
        "capacity), and give it more data at the cold temperature."
    ),
    LOSS_RISING: (
        "Lower the learning rate, switch to the plateau schedule, and resume from best.pt."
    ),
    LOSS_STUCK: (
        "Increase model capacity (a larger preset), raise the learning rate a little or train "
        "longer, and check the data."
    ),
    LOGDET_ASYMMETRY: "Check the data normalisation, and train longer.",
    GRAD_EXPLOSION: "Lower the learning rate and tighten gradient clipping.",
    ACCEPTANCE_COLLAPSE: "Stop and resume from best.pt, with a lower learning rate.",
    OVERFITTING: (
        "The final model already holds the best validated weights (best.pt); for a better one, "
        "generate more data (data.n_samples), average the weights (training.ema_decay = 0.995), "
        "train fewer epochs or lower the learning rate; training.patience ends such a run by itself."
    ),
    DIVERGED: (
        "Continue from the best weights (best.pt) with a learning rate ten times lower; add a "
        "warmup (training.warmup_epochs) if there is none."
    ),
}


# --- the command each hint suggests -----------------------------------------------------------

def _lr_text(lr: float) -> str:
    text = f"{lr:.0e}"  # 5e-05
    mantissa, exponent = text.split("e")
    return f"{mantissa}e{int(exponent)}"


def suggested_lr(history: History) -> str:
    """A learning rate ten times below the run's peak, written as a user would type it."""
    peak = history.run.lr if history.run is not None else math.nan
    return _lr_text(peak / 10.0) if math.isfinite(peak) and peak > 0 else "1e-4"


def run_dir_arg(history: History) -> str:
    """The run directory as a shell argument; RUN_DIR when the history does not know it."""
    run = history.run
    return shlex.quote(run.run_dir) if run is not None and run.run_dir else "RUN_DIR"


def resume_command(history: History, *, best: bool = True, lr: str | None = None, sets: Iterable[str] = (),
                   epochs: int | None = None) -> str:
    """`molpt-tui train --resume RUN --from best --lr X ...` for this run."""
    parts = ["molpt-tui", "train", "--resume", run_dir_arg(history)]
    if best:
        parts += ["--from", "best"]
    if lr is not None:
        parts += ["--lr", lr]
    if epochs is not None:
        parts += ["--epochs", str(epochs)]
    for item in sets:
        parts += ["--set", item]
    return " ".join(parts)


def _new_run_command(history: History, suffix: str, sets: Iterable[str]) -> str:
    run = history.run
    parts = ["molpt-tui", "train"]
    if run is not None and run.preset:
        parts += ["--preset", shlex.quote(run.preset)]
    for item in sets:
        parts += ["--set", item]
    if run is not None and run.run_dir:
        parts += ["--out", shlex.quote(run.run_dir.rstrip("/") + suffix)]
    return " ".join(parts)


def command_for(rule: str, history: History) -> str:
    """The command that does what `HINTS[rule]` suggests, with this run's directory and numbers."""
    lr = suggested_lr(history)
    run = history.run
    epochs = run.epochs if run is not None else 0
    if rule == INITIAL_LOSS_HUGE:
        return _new_run_command(history, "_internal", ["model.representation=internal", f"training.lr={lr}"])
    if rule in (NONFINITE_METRIC, NONFINITE_ENERGIES):
        return resume_command(history, lr=lr, sets=["training.energy_reg_kt=100"])
    if rule in (INVERSE_DIVERGING, FORWARD_DIVERGING):
        warmup = max(20, 2 * run.warmup_epochs) if run is not None else 20
        return resume_command(history, lr=lr, sets=[f"training.warmup_epochs={warmup}"])
    if rule == LOSS_RISING:
        return resume_command(history, lr=lr, sets=["training.schedule=plateau"])
    if rule in (LOSS_STUCK, LOGDET_ASYMMETRY):
        return resume_command(history, best=False, epochs=max(2 * epochs, epochs + 1) if epochs else None)
    if rule == GRAD_EXPLOSION:
        return resume_command(history, lr=lr, sets=["training.grad_clip=1.0"])
    if rule in (ACCEPTANCE_COLLAPSE, DIVERGED):
        return resume_command(history, lr=lr)
    if rule == OVERFITTING:
        n = run.data_samples if run is not None else 0
        more = 2 * n if n else 20000
        preset = run.preset if run is not None and run.preset else "custom"
        return _new_run_command(history, f"_{more}", [f"data.n_samples={more}",
                                                      f"data.path=data/{preset}_{more}.npz"])
    return ""


# --- helpers ----------------------------------------------------------------------------------

def _finite_tail(history: History, key: str, n: int, after_epoch: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, values) of the last `n` entries of a series, keeping finite ones past `after_epoch`."""
    epochs = np.asarray(history.epochs[-n:], dtype=float)
    values = np.asarray(history.series[key][-n:], dtype=float)
    keep = np.isfinite(values) & (epochs > after_epoch)
    return epochs[keep], values[keep]


def _theil_sen(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Median of pairwise slopes: unlike least squares, one wild epoch cannot tilt the trend."""
    if len(x) > 200:
        # Pairs grow quadratically; an even stride keeps the estimate and bounds the cost.
        idx = np.linspace(0, len(x) - 1, 200).round().astype(int)
        x, y = x[idx], y[idx]
    i, j = np.triu_indices(len(x), k=1)
    dx = x[j] - x[i]
    ok = dx != 0
    slope = float(np.median((y[j] - y[i])[ok] / dx[ok]))
    intercept = float(np.median(y - slope * x))
    return slope, intercept


def _fmt(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-2):
        return f"{value:.3e}"
    return f"{value:.2f}"


def _alert(rule: str, severity: Severity, epoch: int, message: str, history: History) -> Alert:
    return Alert(epoch=int(epoch), rule=rule, severity=severity, message=message, hint=HINTS[rule],
                 command=command_for(rule, history))


# --- rules ------------------------------------------------------------------------------------

def rule_initial_loss_huge(history: History, th: AlertThresholds) -> list[Alert]:
    for epoch, loss in zip(history.epochs, history.series["loss"]):
        if math.isfinite(loss):
            if loss > th.initial_loss_max:
                return [_alert(INITIAL_LOSS_HUGE, "warning", epoch,
                               f"Initial loss is {_fmt(loss)} kT (> {_fmt(th.initial_loss_max)}): the flow "
                               "starts far from the target ensemble.", history)]
            return []
    return []


# grad_norm and seconds default to NaN when not measured, so only an infinite grad norm counts.
_MUST_BE_FINITE = ("loss", "fwd_energy", "fwd_logdet", "inv_energy", "inv_logdet", "lr")


def rule_nonfinite_metric(history: History, th: AlertThresholds) -> list[Alert]:
    if not history.epochs:
        return []
    bad = [k for k in _MUST_BE_FINITE if not math.isfinite(history.series[k][-1])]
    if math.isinf(history.series["grad_norm"][-1]):
        bad.append("grad_norm")
    if not bad:
        return []
    return [_alert(NONFINITE_METRIC, "error", history.last_epoch,
                   f"Non-finite values (NaN/Inf) in {', '.join(bad)} at epoch {history.last_epoch}.", history)]


def rule_nonfinite_energies(history: History, th: AlertThresholds) -> list[Alert]:
    if not history.epochs:
        return []
    n = history.series["n_nonfinite"][-1]
    if not (n > 0):
        return []
    return [_alert(NONFINITE_ENERGIES, "warning", history.last_epoch,
                   f"{int(n)} non-finite energies at epoch {history.last_epoch}: the flow maps some "
                   "samples onto clashing or broken structures.", history)]


def _loss_jump(history: History, th: AlertThresholds) -> list[Alert]:
    """A loss far above its best for two epochs in a row is rising whatever the epoch: no trend
    fit needed, and the trend rule's warmup grace would hide a run that explodes in its first
    epochs. One epoch alone is a spike, which the trend rule is meant to shrug off."""
    losses = np.asarray(history.series["loss"], dtype=float)
    if len(losses) < 3 or not np.isfinite(losses[-2:]).all():
        return []
    earlier = losses[:-2][np.isfinite(losses[:-2])]
    if not earlier.size:
        return []
    best = float(earlier.min())
    limit = best + th.rising_jump_factor * max(abs(best), th.diverged_scale)
    if not (losses[-2:] > limit).all():
        return []
    best_epoch = history.epochs[int(np.flatnonzero(losses == best)[0])]
    return [_alert(LOSS_RISING, "warning", history.last_epoch,
                   f"Loss jumped to {_fmt(float(losses[-1]))} kT from its best {_fmt(best)} kT (epoch {best_epoch}) "
                   "and stayed there.", history)]


def rule_loss_rising(history: History, th: AlertThresholds) -> list[Alert]:
    jump = _loss_jump(history, th)
    if jump:
        return jump
    if history.last_epoch <= th.rising_after_epoch:
        return []
    x, y = _finite_tail(history, "loss", th.rising_window, after_epoch=th.rising_after_epoch)
    if len(y) < max(5, th.rising_window // 2):
        return []
    slope, intercept = _theil_sen(x, y)
    span = x[-1] - x[0]
    rise = slope * span
    if rise <= max(th.rising_min_rel * float(np.median(np.abs(y))), th.rising_min_abs):
        return []
    # Significance: compare the fitted rise with its standard error, so noise on a flat plateau
    # is not read as a trend. The larger of the MAD and RMS residual spreads keeps it
    # conservative: a 50-point MAD is itself noisy, and a spike should make us less sure.
    resid = y - (slope * x + intercept)
    mad_sigma = 1.4826 * float(np.median(np.abs(resid - np.median(resid))))
    sigma = max(mad_sigma, float(np.std(resid, ddof=2)) if len(resid) > 2 else 0.0)
    sxx = float(np.sum((x - x.mean()) ** 2))
    se_rise = sigma * span / math.sqrt(sxx) if sxx > 0 else math.inf
    if se_rise > 0 and rise < th.rising_min_z * se_rise:
        return []
    return [_alert(LOSS_RISING, "warning", history.last_epoch,
                   f"Loss has been rising: +{_fmt(rise)} kT over the last {int(span) + 1} epochs "
                   f"(now {_fmt(float(y[-1]))} kT).", history)]


def _divergence(history: History, th: AlertThresholds, rising_key: str, falling_key: str,
                rule: str, rising_name: str, falling_name: str) -> list[Alert]:
    n = th.divergence_window
    _, up = _finite_tail(history, rising_key, n)
    _, down = _finite_tail(history, falling_key, n)
    if min(len(up), len(down)) < 4:
        return []
    # Medians of the window's first and last quarters: robust to a single noisy epoch.
    k_up, k_down = max(1, len(up) // 4), max(1, len(down) // 4)
    up_start, up_end = float(np.median(up[:k_up])), float(np.median(up[-k_up:]))
    down_start, down_end = float(np.median(down[:k_down])), float(np.median(down[-k_down:]))
    rise = up_end - up_start
    exploding = rise > max(th.divergence_min_rise, th.divergence_rel_rise * abs(up_start))
    if not (exploding and down_end < down_start):
        return []
    # When the "falling" direction has itself exploded within the window, neither direction is
    # winning: both blew up, and the `diverged` rule says so in one alert (otherwise the two
    # one-sided alerts flip with every noisy epoch of two huge curves).
    falling, _ = exploded_mask(history.series[falling_key], th)
    if falling[-n:].any():
        return []
    return [_alert(rule, "error", history.last_epoch,
                   f"{rising_name} is exploding ({_fmt(up_start)} -> {_fmt(up_end)} kT) while "
                   f"{falling_name} keeps dropping ({_fmt(down_start)} -> {_fmt(down_end)} kT): "
                   "the map is fitting one direction at the expense of the other.", history)]


def rule_inverse_diverging(history: History, th: AlertThresholds) -> list[Alert]:
    return _divergence(history, th, "inv_energy", "fwd_energy", INVERSE_DIVERGING, "Inv_E", "Fwd_E")


def rule_forward_diverging(history: History, th: AlertThresholds) -> list[Alert]:
    return _divergence(history, th, "fwd_energy", "inv_energy", FORWARD_DIVERGING, "Fwd_E", "Inv_E")


def rule_loss_stuck(history: History, th: AlertThresholds) -> list[Alert]:
    if history.last_epoch < th.stuck_after_epoch:
        return []
    _, y = _finite_tail(history, "loss", th.stuck_window)
    if len(y) == 0:
        return []
    median = float(np.median(y))
    if median <= th.stuck_loss:
        return []
    return [_alert(LOSS_STUCK, "warning", history.last_epoch,
                   f"Loss is still {_fmt(median)} kT (median of the last {len(y)} epochs) after "
                   f"{history.last_epoch} epochs; expected below {_fmt(th.stuck_loss)} kT by now.", history)]


def rule_logdet_asymmetry(history: History, th: AlertThresholds) -> list[Alert]:
    # For an exact transport T^-1(y ~ hot) ~ cold, so E_hot[log|J_T^-1|] = -E_cold[log|J_T|].
    if history.last_epoch < th.logdet_after_epoch:
        return []
    _, fwd = _finite_tail(history, "fwd_logdet", th.logdet_window)
    _, inv = _finite_tail(history, "inv_logdet", th.logdet_window)
    if min(len(fwd), len(inv)) < 2:
        return []
    f, i = float(np.mean(fwd)), float(np.mean(inv))
    ratio = abs(f + i) / max(abs(f), abs(i), th.logdet_min_scale)
    if ratio <= th.logdet_asymmetry_ratio:
        return []
    return [_alert(LOGDET_ASYMMETRY, "info", history.last_epoch,
                   f"Forward and inverse log-dets do not mirror each other: mean fwd {_fmt(f)}, "
                   f"mean inv {_fmt(i)} (expected about {_fmt(-f)}); asymmetry {ratio:.2f}.", history)]


def rule_grad_explosion(history: History, th: AlertThresholds) -> list[Alert]:
    if not history.epochs:
        return []
    latest = history.series["grad_norm"][-1]
    if not math.isfinite(latest):
        return []
    previous = np.asarray(history.series["grad_norm"][-th.grad_window - 1:-1], dtype=float)
    previous = previous[np.isfinite(previous)]
    if len(previous) < th.grad_min_history:
        return []
    median = float(np.median(previous))
    if median <= 0 or latest <= th.grad_explosion_factor * median:
        return []
    return [_alert(GRAD_EXPLOSION, "warning", history.last_epoch,
                   f"Gradient norm {_fmt(latest)} is {latest / median:.0f}x its running median "
                   f"({_fmt(median)}).", history)]


def rule_acceptance_collapse(history: History, th: AlertThresholds) -> list[Alert]:
    blocks = [b for b in history.blocks if math.isfinite(b.acc_flow)]
    if not blocks:
        return []
    last = blocks[-1]
    reasons = []
    if math.isfinite(last.acc_naive) and last.acc_flow < last.acc_naive * (1.0 - th.acc_naive_margin):
        reasons.append(f"flow-swap acceptance {last.acc_flow:.3g} is below the naive swap's "
                       f"{last.acc_naive:.3g}")
    best = max(b.acc_flow for b in blocks)
    if best >= th.acc_min_best and last.acc_flow < best / th.acc_drop_factor:
        reasons.append(f"flow-swap acceptance fell from its best {best:.3g} to {last.acc_flow:.3g}")
    if not reasons:
        return []
    return [_alert(ACCEPTANCE_COLLAPSE, "warning", last.epoch,
                   "Acceptance collapsed: " + "; ".join(reasons) + ".", history)]


def rule_overfitting(history: History, th: AlertThresholds) -> list[Alert]:
    """The held-out KL rises from its best while the training KL keeps falling: the flow is
    learning the training samples rather than the ensembles."""
    blocks = [b for b in history.blocks if math.isfinite(b.kl_val) and math.isfinite(b.kl)]
    if len(blocks) < th.overfit_blocks + 1:
        return []
    best = min(blocks, key=lambda b: b.kl_val)
    recent = blocks[-th.overfit_blocks:]
    rise = min(b.kl_val for b in recent) - best.kl_val
    if best in recent or rise < max(th.overfit_min_rise, th.overfit_rel_rise * abs(best.kl_val)):
        return []
    if not recent[-1].kl < best.kl:
        return []
    last = recent[-1]
    return [_alert(OVERFITTING, "warning", last.epoch,
                   f"Held-out KL rose from {best.kl_val:.3g} kT (epoch {best.epoch}) to {last.kl_val:.3g} kT "
                   f"while the training KL fell to {last.kl:.3g} kT: the flow is overfitting the training data.",
                   history)]


def rule_diverged(history: History, th: AlertThresholds) -> list[Alert]:
    """The verdict of `verdict.divergence`; with `alerts.stop_on_divergence` the trainer ends
    the run on it."""
    found = divergence(history, th)
    if found is None:
        return []
    ending = " The run ends here (alerts.stop_on_divergence)." if th.stop_on_divergence else ""
    return [_alert(DIVERGED, "error", found.epoch, f"Diverged: {found.describe()}.{ending}", history)]


Rule = Callable[[History, AlertThresholds], list[Alert]]

RULES: dict[str, Rule] = {
    INITIAL_LOSS_HUGE: rule_initial_loss_huge,
    NONFINITE_METRIC: rule_nonfinite_metric,
    NONFINITE_ENERGIES: rule_nonfinite_energies,
    LOSS_RISING: rule_loss_rising,
    INVERSE_DIVERGING: rule_inverse_diverging,
    FORWARD_DIVERGING: rule_forward_diverging,
    LOSS_STUCK: rule_loss_stuck,
    LOGDET_ASYMMETRY: rule_logdet_asymmetry,
    GRAD_EXPLOSION: rule_grad_explosion,
    ACCEPTANCE_COLLAPSE: rule_acceptance_collapse,
    OVERFITTING: rule_overfitting,
    DIVERGED: rule_diverged,
}


def evaluate(history: History, thresholds: AlertThresholds | None = None) -> list[Alert]:
    """Every alert whose condition holds for the history as it stands (no deduplication)."""
    th = thresholds or AlertThresholds()
    out: list[Alert] = []
    for rule_id, rule in RULES.items():
        if rule_id not in th.disabled:
            out.extend(rule(history, th))
    return out


class AlertTracker:
    """Raises each rule once per episode: again only after its condition has cleared.

    "Cleared" means absent for `rearm_epochs` epochs, a little hysteresis so a condition that
    flickers (a spiky gradient norm) is one alert, not one per spike. The state is a small
    JSON-native dict saved with checkpoints, so a resumed run does not repeat old alerts.
    """

    STATE_VERSION = 1

    def __init__(self, thresholds: AlertThresholds | None = None) -> None:
        self.thresholds = thresholds or AlertThresholds()
        self._active: dict[str, int] = {}   # rule -> last epoch its condition held
        self._epoch: int | None = None      # epoch of the last update

    @property
    def active(self) -> frozenset[str]:
        return frozenset(self._active)

    def update(self, alerts: Iterable[Alert], epoch: int) -> list[Alert]:
        """Given the alerts whose condition holds at `epoch`, return those not yet raised."""
        if self._epoch is not None and epoch < self._epoch:
            # A rollback (resume from best.pt): the user acted, so a recurrence is news.
            self._active.clear()
        self._epoch = epoch
        new: list[Alert] = []
        present: set[str] = set()
        for alert in alerts:
            if alert.rule in present:
                continue
            present.add(alert.rule)
            if alert.rule not in self._active:
                new.append(alert)
            self._active[alert.rule] = epoch
        rearm = max(1, self.thresholds.rearm_epochs)
        for rule, seen in list(self._active.items()):
            if rule not in present and epoch - seen >= rearm:
                del self._active[rule]
        return new

    def check(self, history: History) -> list[Alert]:
        """Evaluate all rules on `history` and return only the new alerts."""
        return self.update(evaluate(history, self.thresholds), history.last_epoch)

    def state_dict(self) -> dict[str, Any]:
        return {"version": self.STATE_VERSION, "epoch": self._epoch, "active": dict(self._active)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Raises `SchemaError` naming the key of a missing or ill-typed value; sets nothing then."""
        self._epoch, self._active = self.parse_state(state)

    @classmethod
    def parse_state(cls, state: Mapping[str, Any]) -> tuple[int | None, dict[str, int]]:
        """(epoch, active) of a saved state, checked; a checkpoint is validated with this before
        anything is loaded."""
        version = as_int(required(state, "version"), "version", minimum=1)
        if version > cls.STATE_VERSION:
            raise SchemaError("version", f"alert tracker state version {version} is newer than this molpt-tui "
                                         f"understands ({cls.STATE_VERSION})")
        epoch = as_optional_int(required(state, "epoch"), "epoch")
        active = as_mapping(required(state, "active"), "active")
        out: dict[str, int] = {}
        for rule, seen in active.items():
            out[as_str(rule, "active")] = as_int(seen, f"active.{rule}")
        return epoch, out
