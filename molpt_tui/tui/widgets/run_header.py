"""The run's identity, from RunStarted: model, temperatures, device, engine, size, directory."""
from __future__ import annotations

from typing import Any

from textual.content import Content

from molpt_tui.training.events import RunStarted

from ..fit import cut_words
from ..formatting import fmt_num, fmt_params, fmt_transport
from ..glyphs import UNICODE, Glyphs, to_ascii
from .guarded import GuardedWidget

Part = tuple[str, str]
SEP = " · "


def fit_line(parts: list[Part], width: int, ellipsis: str, ascii_only: bool) -> Content:
    """Parts in order while they fit whole; the first that does not is cut at a word boundary."""
    sep = " - " if ascii_only else SEP
    out: list[Part] = []
    used = 0
    for text, style in parts:
        text = sep if text == SEP else (to_ascii(text) if ascii_only else text)
        if used + len(text) <= width:
            out.append((text, style))
            used += len(text)
            continue
        room = width - used
        cut = cut_words(text, room, ellipsis, hard=False) if text != sep and room > len(ellipsis) + 3 else ""
        if cut:
            out.append((cut, style))
            return Content.assemble(*out)
        break
    else:
        return Content.assemble(*out)
    # Something was left out: end on a whole item, then " …" (apart, so it does not read as part
    # of a number).
    more = " " + ellipsis
    while out and (out[-1][0] in (sep, " ", "") or sum(len(t) for t, _ in out) + len(more) > width):
        out.pop()
    out.append((more, "dim"))
    return Content.assemble(*out)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def thread_plan(run: RunStarted) -> list[str]:
    """How the trainer splits its CPUs, as its RunStarted says: "2 CPUs (SLURM_CPUS_PER_TASK=2)",
    "torch 2 threads", "2 energy workers" (nothing for a run from before the plan was recorded)."""
    out: list[str] = []
    if run.cpus > 0:
        out.append(_plural(run.cpus, "CPU") + (f" ({run.cpus_source})" if run.cpus_source else ""))
    if run.torch_threads > 0:
        out.append(f"torch {_plural(run.torch_threads, 'thread')}")
    if run.energy_workers > 0:  # none: the engine (just before) says where energies run
        out.append(_plural(run.energy_workers, "energy worker"))
    return out


class RunHeader(GuardedWidget):
    """Two lines, each cut at a word boundary rather than wrapped, so narrow terminals keep both."""

    WHERE = "the run header"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lines: list[list[Part]] = []
        self.glyphs: Glyphs = UNICODE
        self.ascii_only = False

    def show(self, run: RunStarted | None, *, badge: str, run_dir: str | None = None, waiting: str = "") -> None:
        label: Part = (f" {badge.upper()} ", "bold reverse")
        if run is None:
            self.lines = [[label, (" ", ""), (waiting or "waiting for the run to start…", "dim")],
                          [(run_dir or "", "dim")]]
        else:
            first: list[Part] = [label, (" ", ""), (fmt_transport(run.t_cold, run.t_hot), "bold $accent"),
                                 (SEP, "dim"), (run.model, "bold")]
            if run.preset:
                first += [(SEP, "dim"), (f"preset {run.preset}", "")]
            second: list[Part] = [(run.device, ""), (SEP, "dim"), (run.engine, "")]
            for text in thread_plan(run):
                second += [(SEP, "dim"), (text, "")]
            second += [(SEP, "dim"), (fmt_params(run.n_params), ""), (SEP, "dim"), (f"batch {run.batch_size}", ""),
                       (SEP, "dim"), (f"lr {fmt_num(run.lr, 3)}", "")]
            # The SLURM job, its time left and requeues are on the system line below (it counts down).
            second += [(SEP, "dim"), (run.run_dir or run_dir or "", "dim")]
            self.lines = [first, second]
        self.refresh()

    @property
    def text(self) -> str:
        return "\n".join("".join(t for t, _ in line) for line in self.lines)

    def draw(self) -> Content:
        width = max(self.size.width, 1)
        return Content("\n").join(fit_line(line, width, self.glyphs.ellipsis, self.ascii_only)
                                  for line in self.lines)
