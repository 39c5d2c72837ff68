"""Headless console output: a banner, a progress bar, epoch blocks, alerts and a final summary.

Two modes, chosen by whether the stream is a terminal:

- TTY: a tqdm bar redrawn in place, with other output written above it (`tqdm.write`).
- not a TTY (SLURM output file, `| tee`, CI): tqdm's carriage-return redraws would fill the log
  with thousands of overwritten bar states, so no bar at all; a plain progress line is printed
  every `progress_every_s` seconds and at each log block instead.
"""
from __future__ import annotations

import datetime as _dt
import math
import shlex
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

from tqdm import tqdm

from ..training.events import Alert, CheckpointSaved, EpochMetrics, Event, Finished, LogBlock, Message, RunStarted, Sink

RULE = "=" * 64


def fmt_num(x: float) -> str:
    """Losses run from 1e13 to -50 kT in one run: fixed point when readable, else scientific."""
    if not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.3e}"
    return f"{x:.2f}"


def fmt_lr(x: float) -> str:
    return f"{x:.2e}" if math.isfinite(x) else fmt_num(x)


def fmt_prob(x: float) -> str:
    # Acceptances at wide temperature gaps are 1e-9: a fixed 0.000 would hide them.
    if not math.isfinite(x):
        return fmt_num(x)
    return f"{x:.3f}" if x >= 0.01 or x == 0 else f"{x:.2e}"


def fmt_duration(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    return str(_dt.timedelta(seconds=round(seconds)))


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


class ConsoleReporter(Sink):
    def __init__(self, stream: TextIO | None = None, *, isatty: bool | None = None,
                 progress_every_s: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self.stream = stream if stream is not None else sys.stdout
        self.isatty = _stream_is_tty(self.stream) if isatty is None else bool(isatty)
        self.progress_every_s = float(progress_every_s)
        self._clock = clock
        self._arrow = "\u2192" if _can_encode(self.stream, "\u2192") else "->"
        self._lock = threading.Lock()
        self._bar: tqdm | None = None
        self._run: RunStarted | None = None
        self._last: EpochMetrics | None = None
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

    def _of_total(self, epoch: int) -> str:
        return f"{epoch}/{self._total}" if self._total else str(epoch)

    # --- Sink -----------------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        with self._lock:
            if isinstance(event, EpochMetrics):
                self._on_epoch(event)
            elif isinstance(event, LogBlock):
                self._on_block(event)
            elif isinstance(event, Alert):
                self._print(self.format_alert(event))
            elif isinstance(event, Message):
                self._print(f"[{event.level}] {event.text}")
            elif isinstance(event, CheckpointSaved):
                self._print(f"Checkpoint saved ({event.label}, epoch {event.epoch}): {event.path}")
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
        self._segment_t0 = self._clock()
        self._segment_start_epoch = ev.start_epoch
        self._last_progress_t = None
        self._last_progress_epoch = None
        self._print(self.format_banner(ev))
        if self.isatty:
            self._bar = tqdm(total=ev.epochs or None, initial=ev.start_epoch, file=self.stream, desc="Training",
                             dynamic_ncols=True, leave=True, smoothing=0.1)

    def _on_epoch(self, ev: EpochMetrics) -> None:
        self._last = ev
        if self.isatty:
            if self._bar is None:
                self._bar = tqdm(total=self._total, file=self.stream, desc="Training", dynamic_ncols=True)
            self._bar.set_postfix({"Loss": fmt_num(ev.loss), "Fwd_E": fmt_num(ev.fwd_energy),
                                   "Inv_E": fmt_num(ev.inv_energy), "LR": fmt_lr(ev.lr)}, refresh=False)
            if ev.epoch > self._bar.n:
                self._bar.update(ev.epoch - self._bar.n)
            else:
                # A rollback (resume from best.pt): tqdm has no backwards update.
                self._bar.n = ev.epoch
                self._bar.refresh()
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
            f"  Batch size:  {ev.batch_size}",
            f"  LR:          {fmt_lr(ev.lr)}",
            f"  Device:      {ev.device}",
            f"  Parameters:  {ev.n_params:,}",
            f"  Energy:      {engine}",
            f"  Run dir:     {ev.run_dir}",
        ]
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
        if math.isfinite(per_epoch):
            parts.append(f"{per_epoch:.2f} s/it")
        parts.append(f"elapsed {fmt_duration(elapsed)}")
        if total and math.isfinite(per_epoch):
            parts.append(f"ETA {fmt_duration(per_epoch * max(0, total - ev.epoch))}")
        return f"[{time.strftime('%H:%M:%S')}] " + " | ".join(parts)

    def format_block(self, ev: LogBlock) -> str:
        improvement = f"{ev.improvement_pct:.1f}%" if math.isfinite(ev.improvement_pct) else "n/a"
        lines = [
            "",
            f"Epoch {self._of_total(ev.epoch)}",
            f"  Total Loss:      {fmt_num(ev.loss)} kT",
            f"  Forward:         Energy {fmt_num(ev.fwd_energy)} kT | LogDet {fmt_num(ev.fwd_logdet)}",
            f"  Inverse:         Energy {fmt_num(ev.inv_energy)} kT | LogDet {fmt_num(ev.inv_logdet)}",
            f"  LR:              {fmt_lr(ev.lr)}",
            f"  Improvement from start: {improvement}",
        ]
        if math.isfinite(ev.kl):
            # the loss above its floor beta_c<U>_c + beta_h<U>_h: what "improvement" measures
            held_out = f" | held-out {fmt_num(ev.kl_val)} kT" if math.isfinite(ev.kl_val) else ""
            lines.insert(5, f"  KL fwd+inv:      {fmt_num(ev.kl)} kT{held_out}")
        if math.isfinite(ev.acc_flow) or math.isfinite(ev.acc_naive):
            acc = f"  Acceptance:      flow {fmt_prob(ev.acc_flow)} vs naive {fmt_prob(ev.acc_naive)}"
            if math.isfinite(ev.acc_flow) and math.isfinite(ev.acc_naive) and ev.acc_naive > 0:
                acc += f" ({ev.acc_flow / ev.acc_naive:.3g}x)"
            lines.append(acc)
        if math.isfinite(ev.ess_fwd) or math.isfinite(ev.ess_inv):
            lines.append(f"  ESS:             fwd {ev.ess_fwd:.1f}% | inv {ev.ess_inv:.1f}%")
        if math.isfinite(ev.roundtrip_err):
            lines.append(f"  Round-trip err:  {ev.roundtrip_err:.2e}")
        last = self._last
        if last is not None and last.epoch == ev.epoch and (last.n_regularised or last.n_nonfinite):
            # never hidden: how many energies the regularisation bent or could not count
            lines.append(f"  Energies:        {last.n_regularised} above the regularisation threshold, "
                         f"{last.n_nonfinite} non-finite (this epoch)")
        return "\n".join(lines)

    @staticmethod
    def format_alert(ev: Alert) -> str:
        return f"[{ev.severity.upper()}] epoch {ev.epoch} {ev.rule}: {ev.message}\n  Fix: {ev.hint}"

    def format_final(self, ev: Finished) -> str:
        title = {"completed": "Training completed", "stopped": "Training stopped",
                 "failed": "Training FAILED"}.get(ev.status, f"Training {ev.status}")
        lines = ["", RULE, f"{title} at epoch {self._of_total(ev.epoch)}"]
        summary = []
        if math.isfinite(ev.best_loss):
            summary.append(f"Best loss: {fmt_num(ev.best_loss)} kT")
        if math.isfinite(ev.improvement_pct):
            summary.append(f"Improvement from start: {ev.improvement_pct:.1f}%")
        if summary:
            lines.append("  " + " | ".join(summary))
        if ev.message:
            lines.append(f"  {ev.message}")
        run_dir = self._run.run_dir if self._run is not None else ""
        lines.append("Results saved to:" + (f" {run_dir}" if run_dir else ""))
        lines += [f"  {path}" for path in ev.files] or ["  (no files written)"]
        if ev.status in ("stopped", "failed"):
            lines.append(f"To resume: molpt-tui train --resume {shlex.quote(run_dir) if run_dir else 'RUN_DIR'}")
        lines.append(RULE)
        return "\n".join(lines)
