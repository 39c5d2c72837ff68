"""The header's system line: the trainer process as the system sees it, and its SLURM allocation.

"CPU 183 % of 2 CPUs · 9 threads · RSS 812 MiB · 1.23 k energy evals/s · 3.4 M total · GPU 87 % ·
10.2 / 80.0 GiB", from the trainer's latest SystemStats event; under SLURM it starts with the job,
the allocation's time left (counting down on the monitor's clock) and the requeues so far.

Every figure carries its label, and a figure the trainer could not read (NaN: no psutil, no GPU,
no nvidia-ml-py) is left out rather than shown as "nan". In `watch` the trainer may have died:
figures older than a few sampling intervals say how old they are. What does not fit is left out
whole, least telling first, so a narrow terminal loses figures, never halves of them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from textual.content import Content

from molpt_tui.training.events import RunStarted, SystemStats

from ..fit import keep_by_priority
from ..formatting import fmt_ago, fmt_gib, fmt_mib, fmt_scaled
from ..glyphs import to_ascii
from .guarded import GuardedWidget

SEP = " · "
ASCII_SEP = " - "
# Readings count as stale after this many sampling intervals without a new one.
STALE_INTERVALS = 3
# The trainer samples every 5 s by default (training.system_stats); an interval it did not
# report (or one of a first, partial sample) is taken as that, and never below a second, so a
# tiny first interval does not mark every reading stale at once.
DEFAULT_INTERVAL_S = 5.0
MIN_INTERVAL_S = 1.0
# Below this much time left, the allocation's countdown is drawn as a warning.
SLURM_WARN_S = 600.0


@dataclass(frozen=True)
class Item:
    text: str
    priority: int        # higher is left out later
    style: str = ""
    joiner: str = SEP    # put before it when an item precedes it


def _ok(value: float) -> bool:
    # Negative figures are no reading (a counter that wrapped, a probe that failed), like NaN.
    return math.isfinite(value) and value >= 0


def stats_age(stats: SystemStats, now: float) -> float:
    return max(0.0, now - stats.t)


def is_stale(stats: SystemStats, now: float) -> bool:
    interval = stats.interval_s if _ok(stats.interval_s) and stats.interval_s > 0 else DEFAULT_INTERVAL_S
    return stats_age(stats, now) > STALE_INTERVALS * max(interval, MIN_INTERVAL_S)


def time_left_text(seconds: float) -> str:
    """'1 h 02 min', '12 min 05 s', '40 s': the allocation's time left, in words of time."""
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours >= 100:
        return f"{hours} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def slurm_items(run: RunStarted | None, now: float, *, ended: bool, checkpoint_t: float | None = None) -> list[Item]:
    """The job, its time left, its requeues and how old the checkpoint a requeue would resume
    from is (`checkpoint_t`: when the last one was written, None when none has been yet)."""
    if run is None or not run.slurm_job_id:
        return []
    items = [Item(f"SLURM job {run.slurm_job_id}", 6)]
    if not ended and math.isfinite(run.slurm_end_time):
        left = run.slurm_end_time - now
        if left > 0:
            style = "bold $warning" if left < SLURM_WARN_S else ""
            items.append(Item(f"allocation {time_left_text(left)} left", 9, style))
        else:
            items.append(Item("allocation ended", 9, "bold $warning"))
    items.append(Item(f"requeues {max(run.slurm_restart_count, 0)}", 5))
    if checkpoint_t is None:
        items.append(Item("no checkpoint yet", 2, "" if ended else "$warning"))
    else:
        items.append(Item(f"checkpoint {fmt_ago(max(0.0, now - checkpoint_t))} ago", 2))
    return items


def stats_items(stats: SystemStats | None, now: float, *, ended: bool) -> list[Item]:
    """The figures of `stats`, each labelled; unknown ones left out. A figure that needs its
    neighbour to be understood ('3.4 M total' after the rate) has the lower priority, so it is
    never shown without it; when the neighbour is unknown it carries the label itself."""
    if stats is None:
        return []
    items: list[Item] = []
    if _ok(stats.cpu_pct):
        of = f" of {stats.cpus} CPU{'s' if stats.cpus != 1 else ''}" if stats.cpus > 0 else ""
        items.append(Item(f"CPU {fmt_scaled(stats.cpu_pct)} %{of}", 8))
    if stats.threads > 0:
        items.append(Item(f"{fmt_scaled(stats.threads)} thread{'s' if stats.threads != 1 else ''}", 4))
    if _ok(stats.rss_mb):
        items.append(Item(f"RSS {fmt_mib(stats.rss_mb)}", 7))
    has_rate = _ok(stats.energy_evals_per_s)
    if has_rate:
        items.append(Item(f"{fmt_scaled(stats.energy_evals_per_s)} energy evals/s", 6))
    if stats.energy_evals > 0:
        total = fmt_scaled(stats.energy_evals)
        items.append(Item(f"{total} total", 3) if has_rate else Item(f"{total} energy evals", 3))
    has_util = _ok(stats.gpu_util_pct)
    if has_util:
        items.append(Item(f"GPU {fmt_scaled(stats.gpu_util_pct)} %", 6))
    if _ok(stats.gpu_mem_used_mb):
        memory = (f"{fmt_gib(stats.gpu_mem_used_mb)} / {fmt_gib(stats.gpu_mem_total_mb)} GiB"
                  if _ok(stats.gpu_mem_total_mb) else f"{fmt_gib(stats.gpu_mem_used_mb)} GiB used")
        items.append(Item(memory if has_util else f"GPU {memory}", 5))
    if _ok(stats.gpu_torch_mem_mb):
        items.append(Item(f"torch {fmt_gib(stats.gpu_torch_mem_mb)} GiB reserved", 1))
    if items and (ended or is_stale(stats, now)):
        items.append(Item(f"(as of {fmt_ago(stats_age(stats, now))} ago)", 10, "$warning", joiner=" "))
    return items


def system_items(stats: SystemStats | None, run: RunStarted | None, now: float, *, ended: bool = False,
                 checkpoint_t: float | None = None) -> list[Item]:
    """Everything the line can show, in order. `ended`: the run segment has finished, so its
    trainer samples no more (its last figures are marked with their age, its countdown stops)."""
    return slurm_items(run, now, ended=ended, checkpoint_t=checkpoint_t) + stats_items(stats, now, ended=ended)


def fit_items(items: list[Item], width: int, *, ascii_only: bool = False) -> list[tuple[str, str]]:
    """The (text, style) pieces of the items that fit in `width`, separators included."""
    texts = [to_ascii(i.text) if ascii_only else i.text for i in items]
    joiners = [ASCII_SEP if ascii_only and i.joiner == SEP else i.joiner for i in items]
    kept = keep_by_priority([len(t) for t in texts], [i.priority for i in items], width,
                            [len(j) for j in joiners])
    pieces: list[tuple[str, str]] = []
    for n, index in enumerate(kept):
        if n:
            pieces.append((joiners[index], "dim"))
        pieces.append((texts[index], items[index].style))
    return pieces


class SystemLine(GuardedWidget):
    """One line under the run header; hidden while there is nothing to show (no SystemStats yet,
    no SLURM job), so runs from before the system line look as they did."""

    WHERE = "the system line"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.items: list[Item] = []
        self.ascii_only = False

    def show(self, stats: SystemStats | None, run: RunStarted | None, now: float, *, ended: bool = False,
             checkpoint_t: float | None = None) -> None:
        items = system_items(stats, run, now, ended=ended, checkpoint_t=checkpoint_t)
        self.set_class(bool(items), "-shown")  # a class, so the too-small screen still hides it
        if items != self.items:  # the countdown and the age change once a second, not per redraw
            self.items = items
            self.refresh()

    @property
    def text(self) -> str:
        """The whole line, before fitting."""
        return "".join((i.joiner if n else "") + i.text for n, i in enumerate(self.items))

    def draw(self) -> Content:
        return Content.assemble(*fit_items(self.items, max(self.size.width, 1), ascii_only=self.ascii_only))
