"""Headless output of `pt`: one plain line per event worth reading, fit for a SLURM log.

No progress bar: a pt run emits progress every few seconds, and a line at most every
`every_s` seconds per sampler (and the last one of each, always) is what a log file wants.
"""
from __future__ import annotations

import math
import sys
import time
from typing import TextIO

from ..physics.replica_md import md_time
from ..training.events import (
    CheckpointSaved,
    Event,
    Finished,
    Message,
    PTProgress,
    PTStarted,
    RequestAcknowledged,
    Sink,
)


def _num(x: float, digits: int = 3) -> str:
    if not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if x != 0 and abs(x) < 10 ** -digits:
        return f"{x:.2e}"
    return f"{x:.{digits}f}"


def _pm(mean: float, se: float, digits: int = 3) -> str:
    return f"{_num(mean, digits)} ± {_num(se, digits)}" if math.isfinite(se) else _num(mean, digits)


def format_started(e: PTStarted) -> str:
    lines = [f"pt: {e.system}, {e.t_cold:g} K <-> {e.t_hot:g} K, map {e.model_path} (epoch {e.model_epoch})",
             f"pt: {md_time(e.planned_ns)} per replica, swap every {e.swap_every} steps of {e.timestep_fs:g} fs, "
             f"OpenMM {e.platform}, seed {e.seed}; writing {e.run_dir}"]
    if e.ladder:
        lines.append(f"pt: baseline ladder {', '.join(f'{t:g}' for t in e.ladder)} K, naive swaps, "
                     f"{md_time(e.ladder_planned_ns)} per replica (the same total MD time)")
    if math.isfinite(e.check_acc_flow):
        lines.append(f"pt: held-out acceptance of the loaded map {_pm(e.check_acc_flow, e.check_acc_flow_se)} "
                     f"(training logged {_num(e.train_acc_flow)})")
    if e.states:
        lines.append(f"pt: backbone states of {e.rama_label}: {', '.join(e.states)}")
    else:
        lines.append("pt: no peptide backbone: no state populations")
    return "\n".join(lines)


def format_progress(p: PTProgress, states: list[str]) -> str:
    head = f"pt {p.sampler:6s} {md_time(p.ns)}/{md_time(p.planned_ns)}"
    if p.sampler == "flow":
        acc = f"flow-swap acc {_pm(p.acc, p.acc_se)} (naive {_pm(p.acc_naive, p.acc_naive_se)})"
    else:
        acc = f"swap acc {' '.join(_num(a, 2) for a in p.pair_acc)}"
    rate = _num(p.round_trips_per_ns, 1)
    speed = f"{_num(p.ns_per_day, 0)} ns/day"
    if math.isfinite(p.map_share):
        speed += f" ({100 * p.map_share:.0f}% in the map)"
    text = f"{head}  {acc}  round trips {p.round_trips} ({rate}/ns)  {speed}  {p.energy_evals:,} energy evals"
    if states and p.populations:
        pops = [f"{name} {_pm(m, s)}" for name, m, s in zip(states, p.populations, p.populations_se)
                if "cis" not in name or m > 0]
        text += "  " + ", ".join(pops)
    return text


def format_finished(event: Finished) -> list[str]:
    return [f"pt: {event.status}: {event.message}", *(f"pt: wrote {f}" for f in event.files)]


def format_summary(started: PTStarted | None, progress: list[PTProgress], finished: Finished) -> str:
    """What a run segment comes to, as headless lines: its start, each sampler's last progress
    and how it ended (the live TUI leaves this in the terminal when it exits)."""
    states = list(started.states) if started is not None else []
    lines = [format_started(started)] if started is not None else []
    lines += [format_progress(p, states) for p in progress]
    return "\n".join([*lines, *format_finished(finished)])


class PTConsole(Sink):
    def __init__(self, every_s: float = 30.0, stream: TextIO | None = None) -> None:
        self.every_s = every_s
        self.stream = stream or sys.stdout
        self.states: list[str] = []
        self._last_line: dict[str, float] = {}
        self._pending: dict[str, PTProgress] = {}

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def emit(self, event: Event) -> None:
        if isinstance(event, PTStarted):
            self.states = list(event.states)
            self._print(format_started(event))
        elif isinstance(event, PTProgress):
            now = time.monotonic()
            if now - self._last_line.get(event.sampler, -math.inf) >= self.every_s:
                self._last_line[event.sampler] = now
                self._pending.pop(event.sampler, None)
                self._print(format_progress(event, self.states))
            else:
                self._pending[event.sampler] = event
        elif isinstance(event, Message):
            prefix = "" if event.level == "info" else f"{event.level}: "
            self._print(f"pt: {prefix}{event.text}")
        elif isinstance(event, CheckpointSaved) and event.label == "manual":
            self._print(f"pt: checkpoint {event.path}")
        elif isinstance(event, RequestAcknowledged):
            self._print(f"pt: {event.action} request: {event.detail}")
        elif isinstance(event, Finished):
            for p in self._pending.values():
                self._print(format_progress(p, self.states))
            self._pending.clear()
            for line in format_finished(event):
                self._print(line)
