"""One row per LogBlock: the adaptive-schedule epochs with held-out evaluation."""
from __future__ import annotations

from typing import Any

from textual.widgets import DataTable

from molpt_tui.training.events import LogBlock

from ..formatting import fmt_frac, fmt_num, fmt_pct

COLUMNS = ("Epoch", "Loss", "Fwd_E", "Fwd logdet", "Inv_E", "Inv logdet", "LR", "Impr",
           "Acc flow/naive", "ESS fwd/inv")


def block_row(block: LogBlock) -> tuple[str, ...]:
    if block.ess_fwd == block.ess_fwd or block.ess_inv == block.ess_inv:  # either is not NaN
        ess = f"{fmt_pct(block.ess_fwd)}/{fmt_pct(block.ess_inv)}"
    else:
        ess = "–"
    return (
        str(block.epoch),
        fmt_num(block.loss),
        fmt_num(block.fwd_energy),
        fmt_num(block.fwd_logdet),
        fmt_num(block.inv_energy),
        fmt_num(block.inv_logdet),
        fmt_num(block.lr, 3),
        fmt_pct(block.improvement_pct),
        f"{fmt_frac(block.acc_flow)}/{fmt_frac(block.acc_naive)}",
        ess,
    )


class MetricsTable(DataTable[str]):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self._shown: list[LogBlock] = []

    def on_mount(self) -> None:
        self.add_columns(*COLUMNS)

    def show(self, blocks: list[LogBlock]) -> None:
        shown = self._shown
        appended = len(blocks) >= len(shown) and all(a is b for a, b in zip(shown, blocks))
        if not appended:
            # A resume replaced blocks from the rollback point on: rebuild rather than patch.
            self.clear()
            shown = []
        follow = not shown or self.cursor_row >= len(shown) - 1
        for block in blocks[len(shown):]:
            self.add_row(*block_row(block), key=str(block.epoch))
        self._shown = list(blocks)
        if follow and blocks:
            self.move_cursor(row=len(blocks) - 1, animate=False)
