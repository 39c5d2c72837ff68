"""Headless console output: a banner, a progress bar, epoch blocks, alerts and a final summary.

Two modes, chosen by whether the stream is a terminal:

- TTY: a tqdm bar counting steps, redrawn in place as the trainer's step-progress events come
  (a few times a second), with other output written above it (`tqdm.write`).
- not a TTY (SLURM output file, `| tee`, CI): tqdm's carriage-return redraws would fill the log
  with thousands of overwritten bar states, so no bar at all; a plain progress line is printed
  every `progress_every_s` seconds (within an epoch too) and at each log block instead.

Every number says what it measures: the split (training, validation, test), the unit (kT, %),
a standard error where one exists; a value that exploded reads "diverged", a missing one "—",
and a percentage appears only where it means something (`training.history.improvement_pct`).
The formatters are public so the TUI and tests can share them.
"""
from __future__ import annotations

import datetime as _dt
import math
import shlex
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import TextIO

from tqdm import tqdm

from ..physics.replica_md import md_time
from ..training.checklist import Check, checklist
from ..training.events import (
    Alert,
    CheckpointSaved,
    DataProgress,
    DataReport,
    EpochMetrics,
    Event,
    Finished,
    LogBlock,
    Message,
    RunStarted,
    Sink,
    StepProgress,
    TestEvaluation,
)
from ..training.history import History, exploded, improvement_pct

RULE = "=" * 64
MISSING = "\u2014"      # a value that does not exist (yet)
# Widths of the label and number columns of an epoch block, so values line up whatever their size.
LABEL_WIDTH = 25
NUM_WIDTH = 10


def fmt_num(x: float) -> str:
    """Losses run from 1e13 to -50 kT in one run: fixed point when readable, else scientific."""
    if not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.3e}"
    return f"{x:.2f}"


def fmt_kt(x: float, width: int = NUM_WIDTH) -> str:
    """A kT value in a column of `width`: "%.2f" when readable, "%.2e" when huge or tiny, so
    every entry has the same width class and decimals; non-finite as "not finite"."""
    if not math.isfinite(x):
        text = "not finite"
    elif x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        text = f"{x:.2e}"
    else:
        text = f"{x:.2f}"
    return text.rjust(width)


def fmt_lr(x: float) -> str:
    return f"{x:.2e}" if math.isfinite(x) else fmt_num(x)


def fmt_prob(x: float) -> str:
    # Acceptances at wide temperature gaps are 1e-9: a fixed 0.000 would hide them.
    if not math.isfinite(x):
        return fmt_num(x)
    return f"{x:.3f}" if x >= 0.01 or x == 0 else f"{x:.2e}"


def fmt_prob_se(x: float, se: float) -> str:
    """An acceptance with its standard error in the same format: "0.732 ± 0.012", "2.5e-09 ± 1.1e-09"."""
    if not math.isfinite(x):
        return MISSING
    if not math.isfinite(se):
        return fmt_prob(x)
    if x >= 0.01 or x == 0:
        return f"{x:.3f} \u00b1 {se:.3f}"
    return f"{x:.2e} \u00b1 {se:.1e}"


def fmt_pct_se(x: float, se: float) -> str:
    """An ESS in % with its standard error: "93.0 ± 1.2 %"."""
    if not math.isfinite(x):
        return MISSING
    return f"{x:.1f} \u00b1 {se:.1f} %" if math.isfinite(se) else f"{x:.1f} %"


def fmt_kt_se(x: float, se: float) -> str:
    if not math.isfinite(x):
        return "not finite"
    value = fmt_kt(x, 0)
    return f"{value} \u00b1 {fmt_kt(se, 0)} kT" if math.isfinite(se) else f"{value} kT"


def fmt_change(first: float, current: float) -> str:
    """How the validation KL moved since the untrained map: "-35 %" where a percentage means
    something, "diverged" where the value exploded, "—" otherwise."""
    if math.isfinite(first) and exploded(first, current):
        return "diverged"
    pct = improvement_pct(first, current)
    if not math.isfinite(pct):
        return MISSING
    if round(pct) == 0:  # "-0 %" would claim a direction the rounding took away
        return "0 %"
    return f"{-pct:+.0f} %".replace("-", "\u2212")


def fmt_count(n: float) -> str:
    return f"{int(n):,}" if math.isfinite(n) else MISSING


def fmt_duration(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    return str(_dt.timedelta(seconds=round(seconds)))


def fmt_energy_counts(n_regularised: int, n_nonfinite: int) -> str:
    """The energies the regularisation bent or the loss left out, when there are any; "" else."""
    if not (n_regularised or n_nonfinite):
        return ""
    return f"{n_regularised} regularised, {n_nonfinite} non-finite energies"


CHECK_MARKS = {"pass": "\u2714", "fail": "\u2718", "pending": "\u2026"}
CHECK_MARKS_ASCII = {"pass": "[ok]", "fail": "[x]", "pending": "[..]"}


def format_checklist(items: Sequence[Check], ascii_only: bool = False) -> list[str]:
    """One line per good sign: mark, label, since when, the numbers."""
    marks = CHECK_MARKS_ASCII if ascii_only else CHECK_MARKS
    lines = []
    for c in items:
        since = f" (since epoch {c.since_epoch})" if c.since_epoch is not None else ""
        lines.append(f"{marks[c.state]} {c.label}{since}: {c.detail}")
    return lines


def _stream_is_tty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _can_encode(stream: TextIO, text: str) -> bool:
    encoding = getattr(stream, "encoding", None)
    if not encoding:
        return True
    try:
        text.encode(encoding)
        return True
    except (UnicodeEncodeError, LookupError):
        return False


def splits_line(ev: RunStarted) -> str:
    """What each split holds, so that every later "validation" or "test" figure has a size."""
    blocks = (f"in {ev.val_blocks} blocks over the trajectories" if ev.val_blocks > 1
              else "at the end of the trajectories")
    evaluated = f", {ev.val_evaluated:,} evaluated" if ev.val_evaluated < ev.val_held else ""
    test = f"test {ev.test_pairs:,} (independent MD run)" if ev.test_pairs else "no test set"
    return f"training {ev.train_pairs:,} pairs | validation {ev.val_held:,} {blocks}{evaluated} | {test}"


class ConsoleReporter(Sink):
    def __init__(self, stream: TextIO | None = None, *, isatty: bool | None = None,
                 progress_every_s: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self.stream = stream if stream is not None else sys.stdout
        self.isatty = _stream_is_tty(self.stream) if isatty is None else bool(isatty)
        self.progress_every_s = float(progress_every_s)
        self._clock = clock
        self._arrow = "\u2192" if _can_encode(self.stream, "\u2192") else "->"
        self._ascii = not _can_encode(self.stream, "\u2714\u2718\u00b1\u2014\u2212")
        self._lock = threading.Lock()
        self._bar: tqdm | None = None
        self._run: RunStarted | None = None
        self._last: EpochMetrics | None = None
        self._step: StepProgress | None = None
        self._history = History()
        self._segment_t0 = clock()
        self._segment_start_epoch = 0
        self._last_progress_t: float | None = None
        self._last_progress_epoch: int | None = None

    # --- output plumbing ------------------------------------------------------------------
    def _print(self, text: str) -> None:
        if not _can_encode(self.stream, text):
            enc = self.stream.encoding
            text = text.encode(enc, "replace").decode(enc)
        if self._bar is not None:
            tqdm.write(text, file=self.stream)   # clears the bar, writes, redraws it
        else:
            self.stream.write(text + "\n")
        try:
            self.stream.flush()
        except (AttributeError, ValueError, OSError):
            pass

    @property
    def _total(self) -> int | None:
        return self._run.epochs if self._run is not None else None

    @property
    def _steps(self) -> int:
        return max(1, self._run.steps_per_epoch) if self._run is not None else 1

    def _of_total(self, epoch: int) -> str:
        return f"{epoch}/{self._total}" if self._total else str(epoch)

    # --- Sink -----------------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        with self._lock:
            self._history.add(event)
            if isinstance(event, StepProgress):
                self._on_step(event)
            elif isinstance(event, EpochMetrics):
                self._on_epoch(event)
            elif isinstance(event, LogBlock):
                self._on_block(event)
            elif isinstance(event, Alert):
                self._print(self.format_alert(event))
            elif isinstance(event, Message):
                self._print(f"[{event.level}] {event.text}")
            elif isinstance(event, CheckpointSaved):
                self._print(f"Checkpoint saved ({event.label}, epoch {event.epoch}): {event.path}")
            elif isinstance(event, TestEvaluation):
                self._print(self.format_test(event))
            elif isinstance(event, DataReport):
                self._print(self.format_data_report(event))
            elif isinstance(event, DataProgress):
                # A live run prints the MD's progress itself; a replayed log says what was made.
                if event.phase == "written":
                    self._print(self.format_data_written(event))
            elif isinstance(event, RunStarted):
                self._on_run_started(event)
            elif isinstance(event, Finished):
                self._on_finished(event)

    def close(self) -> None:
        with self._lock:
            self._close_bar()

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    # --- handlers -------------------------------------------------------------------------
    def _on_run_started(self, ev: RunStarted) -> None:
        self._close_bar()
        self._run = ev
        self._last = None
        self._step = None
        self._segment_t0 = self._clock()
        self._segment_start_epoch = ev.start_epoch
        self._last_progress_t = None
        self._last_progress_epoch = None
        self._print(self.format_banner(ev))
        if self.isatty:
            self._open_bar(ev.start_epoch * self._steps)

    def _open_bar(self, initial: int) -> None:
        total = self._total * self._steps if self._total else None
        self._bar = tqdm(total=total, initial=initial, file=self.stream, desc="Training", unit="step",
                         dynamic_ncols=True, leave=True, smoothing=0.1)

    def _set_bar(self, epoch: int, step: int, postfix: dict[str, str]) -> None:
        if self._bar is None:
            self._open_bar(0)
        bar = self._bar
        assert bar is not None
        bar.set_description(f"epoch {self._of_total(epoch)}", refresh=False)
        bar.set_postfix(postfix, refresh=False)
        position = (epoch - 1) * self._steps + step if step < self._steps else epoch * self._steps
        if position > bar.n:
            bar.update(position - bar.n)
        else:
            # A rollback (resume from best.pt): tqdm has no backwards update.
            bar.n = position
            bar.refresh()

    @staticmethod
    def _postfix(loss: float, fwd: float, inv: float, lr: float, n_reg: int, n_bad: int) -> dict[str, str]:
        post = {"Loss": fmt_num(loss), "Fwd_E": fmt_num(fwd), "Inv_E": fmt_num(inv), "LR": fmt_lr(lr)}
        if n_reg:
            post["reg"] = str(n_reg)
        if n_bad:
            post["non-finite"] = str(n_bad)
        return post

    def _on_step(self, ev: StepProgress) -> None:
        self._step = ev
        if self.isatty:
            self._set_bar(ev.epoch, ev.step, self._postfix(ev.loss, ev.fwd_energy, ev.inv_energy, ev.lr,
                                                           ev.n_regularised, ev.n_nonfinite))
            return
        now = self._clock()
        if self._last_progress_t is not None and now - self._last_progress_t >= self.progress_every_s:
            self._print(self.format_step(ev, now))
            self._last_progress_t = now

    def _on_epoch(self, ev: EpochMetrics) -> None:
        self._last = ev
        self._step = None
        if self.isatty:
            self._set_bar(ev.epoch, self._steps, self._postfix(ev.loss, ev.fwd_energy, ev.inv_energy, ev.lr,
                                                               ev.n_regularised, ev.n_nonfinite))
            return
        now = self._clock()
        if self._last_progress_t is None or now - self._last_progress_t >= self.progress_every_s:
            self._print_progress(now)

    def _print_progress(self, now: float) -> None:
        if self._last is None:
            return
        self._print(self.format_progress(self._last, now))
        self._last_progress_t = now
        self._last_progress_epoch = self._last.epoch

    def _on_block(self, ev: LogBlock) -> None:
        if not self.isatty and self._last is not None and self._last_progress_epoch != self._last.epoch:
            self._print_progress(self._clock())
        self._print(self.format_block(ev))

    def _on_finished(self, ev: Finished) -> None:
        self._close_bar()
        self._print(self.format_final(ev))

    # --- formatting (public so the TUI's text log and tests can reuse it) -------------------
    def format_banner(self, ev: RunStarted) -> str:
        engine = ev.engine + (f" - {ev.engine_reason}" if ev.engine_reason else "")
        epochs = f"{ev.epochs}" + (f" ({ev.steps_per_epoch} steps/epoch)" if ev.steps_per_epoch != 1 else "")
        lines = [
            RULE,
            "molpt-tui training" + (f" (preset {ev.preset})" if ev.preset else ""),
            f"  Model:       {ev.model}",
            f"  Transport:   {ev.t_cold:.1f}K {self._arrow} {ev.t_hot:.1f}K",
            f"  Epochs:      {epochs}",
            f"  Batch size:  {ev.batch_size}" + (f" per rank x {ev.world_size} ranks ({ev.dist_backend}) = "
                                                 f"{ev.batch_size * ev.world_size} pairs a step"
                                                 if ev.world_size > 1 else ""),
            f"  LR:          {fmt_lr(ev.lr)}",
            f"  Device:      {ev.device}",
            f"  Parameters:  {ev.n_params:,}",
            f"  Energy:      {engine}",
            f"  Run dir:     {ev.run_dir}",
        ]
        if ev.train_pairs:
            lines.insert(-1, f"  Splits:      {splits_line(ev)}")
        if ev.threads_reason:
            lines.insert(-1, f"  CPUs:        {ev.threads_reason}")
        if ev.slurm_job_id:
            ends = ""
            if math.isfinite(ev.slurm_end_time):
                ends = (f", ends {time.strftime('%Y-%m-%d %H:%M', time.localtime(ev.slurm_end_time))} "
                        f"(in {fmt_duration(ev.slurm_end_time - ev.t)})")
            lines.insert(-1, f"  SLURM job:   {ev.slurm_job_id}{ends}, requeued {ev.slurm_restart_count}x")
        if ev.resumed or ev.start_epoch > 0:
            lines.append(f"  Resuming from epoch {ev.start_epoch}")
        lines.append(RULE)
        return "\n".join(lines)

    def _eta(self, per_step: float, epoch: int, step: int) -> str:
        total = self._total
        if not (total and math.isfinite(per_step)):
            return ""
        left = (total - epoch) * self._steps + (self._steps - step)
        return f"ETA {fmt_duration(per_step * max(0, left))}"

    def format_progress(self, ev: EpochMetrics, now: float) -> str:
        done = ev.epoch - self._segment_start_epoch
        elapsed = now - self._segment_t0
        per_epoch = elapsed / done if done > 0 else math.nan
        total = self._total
        parts = [f"epoch {self._of_total(ev.epoch)}"]
        if total:
            parts[0] += f" ({100.0 * ev.epoch / total:.1f}%)"
        parts += [f"Loss {fmt_num(ev.loss)}", f"Fwd_E {fmt_num(ev.fwd_energy)}",
                  f"Inv_E {fmt_num(ev.inv_energy)}", f"LR {fmt_lr(ev.lr)}"]
        counts = fmt_energy_counts(ev.n_regularised, ev.n_nonfinite)
        if counts:
            parts.append(counts)
        if math.isfinite(per_epoch):
            parts.append(f"{per_epoch:.2f} s/it")
        parts.append(f"elapsed {fmt_duration(elapsed)}")
        if total and math.isfinite(per_epoch):
            parts.append(f"ETA {fmt_duration(per_epoch * max(0, total - ev.epoch))}")
        return f"[{time.strftime('%H:%M:%S')}] " + " | ".join(parts)

    def format_step(self, ev: StepProgress, now: float) -> str:
        """A plain progress line from within an epoch (log files)."""
        per_step = ev.segment_seconds / ev.segment_steps if ev.segment_steps else math.nan
        parts = [f"epoch {self._of_total(ev.epoch)} step {ev.step}/{ev.steps_per_epoch}",
                 f"Loss {fmt_num(ev.loss)}", f"Fwd_E {fmt_num(ev.fwd_energy)}", f"Inv_E {fmt_num(ev.inv_energy)}",
                 f"LR {fmt_lr(ev.lr)}"]
        counts = fmt_energy_counts(ev.n_regularised, ev.n_nonfinite)
        if counts:
            parts.append(counts)
        if math.isfinite(per_step):
            parts.append(f"{per_step:.2f} s/step")
        parts.append(f"elapsed {fmt_duration(now - self._segment_t0)}")
        eta = self._eta(per_step, ev.epoch, ev.step)
        if eta:
            parts.append(eta)
        return f"[{time.strftime('%H:%M:%S')}] " + " | ".join(parts)

    def _start_kl(self) -> float:
        start = next((b for b in self._history.blocks if b.epoch == 0), None)
        return start.kl_val if start is not None else math.nan

    def format_block(self, ev: LogBlock) -> str:
        w = NUM_WIDTH

        def row(label: str, value: str) -> str:
            return f"  {label:<{LABEL_WIDTH}}{value}"

        counts = fmt_energy_counts(ev.n_regularised, ev.n_nonfinite)
        if not counts:
            last = self._last
            if last is not None and last.epoch == ev.epoch:
                counts = fmt_energy_counts(last.n_regularised, last.n_nonfinite)
        # never hidden: how many energies the regularisation bent or could not count
        loss = f"{fmt_kt(ev.loss, w)} kT" + (f"   ({counts} this epoch)" if counts else "")
        lines = [
            "",
            f"Epoch {self._of_total(ev.epoch)}",
            row("Loss (training):", loss),
            row("Forward:", f"Fwd_E {fmt_kt(ev.fwd_energy, w)} kT | LogDet {fmt_kt(ev.fwd_logdet, w)}"),
            row("Inverse:", f"Inv_E {fmt_kt(ev.inv_energy, w)} kT | LogDet {fmt_kt(ev.inv_logdet, w)}"),
        ]
        if math.isfinite(ev.kl) or math.isfinite(ev.kl_val):
            # the loss above its floor beta_c<U>_c + beta_h<U>_h, paired per sample
            val = fmt_kt(ev.kl_val, w) + (f" \u00b1 {fmt_kt(ev.kl_val_se, 0)}" if math.isfinite(ev.kl_val_se) else "")
            lines.append(row("KL fwd+inv:", f"train {fmt_kt(ev.kl, w)} kT | validation {val} kT"))
        if ev.epoch > 0:
            lines.append(row("Validation KL vs start:", fmt_change(self._start_kl(), ev.kl_val)))
        lines.append(row("LR:", fmt_lr(ev.lr)))
        if math.isfinite(ev.acc_flow) or math.isfinite(ev.acc_naive):
            lines.append(row("Acceptance (validation):", f"flow {fmt_prob_se(ev.acc_flow, ev.acc_flow_se)} vs naive "
                                                         f"{fmt_prob_se(ev.acc_naive, ev.acc_naive_se)}"))
        if math.isfinite(ev.ess_fwd) or math.isfinite(ev.ess_inv):
            lines.append(row("ESS (validation):", f"fwd {fmt_pct_se(ev.ess_fwd, ev.ess_fwd_se)} | "
                                                  f"inv {fmt_pct_se(ev.ess_inv, ev.ess_inv_se)}"))
        if math.isfinite(ev.roundtrip_err):
            lines.append(row("Round-trip error:", f"{ev.roundtrip_err:.2e} nm"))
        if ev.energy_evals_total:
            lines.append(row("Energy evaluations:", f"{fmt_count(ev.energy_evals_total)} so far"))
        return "\n".join(lines)

    @staticmethod
    def format_alert(ev: Alert) -> str:
        text = f"[{ev.severity.upper()}] epoch {ev.epoch} {ev.rule}: {ev.message}\n  Fix: {ev.hint}"
        if ev.command:
            text += f"\n  Run: {ev.command}"
        return text

    @staticmethod
    def format_test(ev: TestEvaluation) -> str:
        what = "untrained map" if ev.label == "untrained" else f"final model (epoch {ev.epoch})"
        return (f"Test set, {what}: flow-swap acceptance {fmt_prob_se(ev.acc_flow, ev.acc_flow_se)} vs naive "
                f"{fmt_prob_se(ev.acc_naive, ev.acc_naive_se)}; ESS fwd {fmt_pct_se(ev.ess_fwd, ev.ess_fwd_se)} | "
                f"inv {fmt_pct_se(ev.ess_inv, ev.ess_inv_se)}; KL {fmt_kt_se(ev.kl, ev.kl_se)} "
                f"({ev.n_pairs} pairs of an independent MD run, errors by block bootstrap, block {ev.block})")

    @staticmethod
    def format_data_written(ev: DataProgress) -> str:
        what = "test set" if ev.split == "test" else "data file"
        acc = [a for a in ev.swap_acceptance if math.isfinite(a)]
        text = (f"[info] {what} {ev.path} written: {ev.samples} samples per temperature, "
                f"{md_time(ev.simulated_ns)} per replica x {len(ev.temperatures)} replicas")
        if math.isfinite(ev.ns_per_day):
            text += f", {ev.ns_per_day:.1f} ns/day per replica"
        if acc and len(acc) == len(ev.swap_acceptance):
            text += f", swap acceptance {' '.join(f'{a:.2f}' for a in acc)}"
        return text

    @staticmethod
    def format_data_report(ev: DataReport) -> str:
        if not ev.coordinates:
            return f"[info] {ev.split} {ev.path}: {ev.n_samples} samples per temperature (no backbone torsions)"
        text = (f"[info] {ev.split} {ev.path}: {ev.n_samples} samples per temperature, about "
                f"{ev.n_independent:.0f} independent ones for the slowest torsion ({ev.slowest})")
        if ev.suggested_n_samples:
            text += (f"; [warning] the flow's size wants about {ev.needed}: "
                     f"data.n_samples = {ev.suggested_n_samples} would give them")
        return text

    def format_final(self, ev: Finished) -> str:
        title = {"completed": "Training completed", "stopped": "Training stopped",
                 "failed": "Training FAILED", "diverged": "Training DIVERGED"}.get(ev.status, f"Training {ev.status}")
        lines = ["", RULE, f"{title} at epoch {self._of_total(ev.epoch)}"]
        if ev.message and ev.message != "Training completed":
            lines.append(f"  {ev.message}")
        if ev.best_epoch >= 0 and math.isfinite(ev.best_score):
            metric = ev.best_metric or "validation KL"
            text = f"  Final model: best {metric} {fmt_kt(ev.best_score, 0)} kT at epoch {ev.best_epoch}"
            if ev.best_epoch == 0:
                text += " (the untrained map: no later epoch did better)"
            elif math.isfinite(ev.start_score) and metric == "validation KL":
                change = fmt_change(ev.start_score, ev.best_score)
                text += f" (start {fmt_kt(ev.start_score, 0)} kT" + (f", {change})" if change != MISSING else ")")
            if ev.final_model:
                text += f" -> {ev.final_model}"
            lines.append(text)
        final = self._history.test("final")
        untrained = self._history.test("untrained")
        if final is not None:
            before = f" (untrained {fmt_prob_se(untrained.acc_flow, untrained.acc_flow_se)})" if untrained else ""
            lines.append(f"  Test set ({final.n_pairs} pairs, independent MD run): flow-swap acceptance "
                         f"{fmt_prob_se(final.acc_flow, final.acc_flow_se)}{before} vs naive "
                         f"{fmt_prob_se(final.acc_naive, final.acc_naive_se)}")
            lines.append(f"    ESS fwd {fmt_pct_se(final.ess_fwd, final.ess_fwd_se)} | inv "
                         f"{fmt_pct_se(final.ess_inv, final.ess_inv_se)}; "
                         f"KL fwd+inv {fmt_kt_se(final.kl, final.kl_se)}")
        if ev.energy_evals:
            ranks = self._run.world_size if self._run is not None else 1
            over = f" (all {ranks} ranks)" if ranks > 1 else ""
            lines.append(f"  Cost: {fmt_count(ev.energy_evals)} target energy evaluations{over}, "
                         f"{fmt_duration(ev.elapsed_s)} training wall time")
        if self._history.epochs:
            lines.append("  Good signs:")
            lines += ["    " + line for line in format_checklist(checklist(self._history), self._ascii)]
        run_dir = self._run.run_dir if self._run is not None else ""
        lines.append("Results saved to:" + (f" {run_dir}" if run_dir else ""))
        lines += [f"  {path}" for path in ev.files] or ["  (no files written)"]
        where = shlex.quote(run_dir) if run_dir else "RUN_DIR"
        if ev.status == "diverged":
            command = ev.resume_command or f"molpt-tui train --resume {where} --from best --lr 1e-4"
            lines.append(f"To continue from the best weights with a lower LR: {command}")
        elif ev.status in ("stopped", "failed"):
            lines.append(f"To resume: {ev.resume_command or f'molpt-tui train --resume {where}'}")
        lines.append(RULE)
        return "\n".join(lines)
