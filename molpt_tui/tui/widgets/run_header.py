"""The run's identity, from RunStarted: model, temperatures, device, engine, size, directory."""
from __future__ import annotations

from typing import Any

from textual.content import Content
from textual.widget import Widget

from molpt_tui.training.events import RunStarted

from ..formatting import fmt_num, fmt_params, fmt_transport

Part = str | Content | tuple[str, str]
SEP: Part = (" · ", "dim")


class RunHeader(Widget):
    """Two lines, each cut to the width rather than wrapped, so narrow terminals keep both."""

    DEFAULT_CSS = "RunHeader { height: 2; }"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lines: list[Content] = []

    def show(self, run: RunStarted | None, *, badge: str, run_dir: str | None = None) -> None:
        label: Part = (f" {badge.upper()} ", "bold reverse")
        if run is None:
            self.lines = [Content.assemble(label, " ", ("waiting for the run to start…", "dim")),
                          Content.styled(run_dir or "", "dim")]
        else:
            first: list[Part] = [label, " ", (fmt_transport(run.t_cold, run.t_hot), "bold $accent"), SEP,
                                 (run.model, "bold")]
            if run.preset:
                first += [SEP, f"preset {run.preset}"]
            second: list[Part] = [run.device, SEP, run.engine, SEP, fmt_params(run.n_params), SEP,
                                  f"batch {run.batch_size}", SEP, f"lr {fmt_num(run.lr, 3)}", SEP,
                                  (run.run_dir or run_dir or "", "dim")]
            self.lines = [Content.assemble(*first), Content.assemble(*second)]
        self.refresh()

    @property
    def text(self) -> str:
        return "\n".join(line.plain for line in self.lines)

    def render(self) -> Content:
        width = max(self.size.width, 10)
        return Content("\n").join(line.truncate(width, ellipsis=True) for line in self.lines)
