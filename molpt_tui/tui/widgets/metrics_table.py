"""One row per LogBlock: the adaptive-schedule epochs with held-out evaluation.

Every column has one number format, chosen from all of its values (a column that ever holds a
value ≥ 1e5 is in scientific notation throughout), and numbers are right-aligned, so a column
reads at a glance and never widens past its format. When a new row changes a column's format the
table is rebuilt. Wider than its pane, the table scrolls sideways with [ and ].
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual.widgets import DataTable

from molpt_tui.training.events import LogBlock

from ..formatting import column_format, fmt_column, fmt_improvement, fmt_lr, fmt_prob_column, prob_format

ENERGY_KEYS = ("loss", "fwd_energy", "fwd_logdet", "inv_energy", "inv_logdet", "kl_val")
COLUMNS = ("Epoch", "Loss", "Fwd_E", "Fwd logdet", "Inv_E", "Inv logdet", "KL val", "LR", "Impr",
           "Acc flow ±SE", "Acc naive", "ESS fwd", "ESS inv")
Formats = tuple[str, ...]


def table_formats(blocks: list[LogBlock]) -> Formats:
    """The format of every numeric column for these rows."""
    energy = tuple(column_format([float(getattr(b, k)) for b in blocks]) for k in ENERGY_KEYS)
    acc = prob_format([v for b in blocks for v in (b.acc_flow, b.acc_naive)])
    return (*energy, acc)


def _pct(value: float) -> str:
    return f"{value:.1f}%" if value == value and abs(value) != float("inf") else "–"


def block_row(block: LogBlock, formats: Formats | None = None) -> tuple[str, ...]:
    formats = formats or table_formats([block])
    energy = dict(zip(ENERGY_KEYS, formats[:-1]))
    acc_fmt = formats[-1]

    def kt(key: str) -> str:
        return fmt_column(float(getattr(block, key)), energy[key])

    acc = fmt_prob_column(block.acc_flow, acc_fmt)
    if acc != "–" and block.acc_flow_se == block.acc_flow_se:  # an SE is known (not NaN)
        acc += f"±{fmt_prob_column(block.acc_flow_se, acc_fmt)}"
    return (str(block.epoch), kt("loss"), kt("fwd_energy"), kt("fwd_logdet"), kt("inv_energy"),
            kt("inv_logdet"), kt("kl_val"), fmt_lr(block.lr), fmt_improvement(block.improvement_pct),
            acc, fmt_prob_column(block.acc_naive, acc_fmt), _pct(block.ess_fwd), _pct(block.ess_inv))


class MetricsTable(DataTable[Text]):
    def __init__(self, *, convert: Callable[[str], str] = str, **kwargs: Any) -> None:
        """`convert`: applied to every header and cell (to_ascii on terminals without Unicode)."""
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self._shown: list[LogBlock] = []
        self._formats: Formats | None = None
        self.convert = convert

    def on_mount(self) -> None:
        self.add_columns(*(self.convert(c) for c in COLUMNS))

    @property
    def overflows(self) -> bool:
        return self.virtual_size.width > self.scrollable_content_region.width

    def show(self, blocks: list[LogBlock]) -> None:
        shown = self._shown
        formats = table_formats(blocks)
        appended = (len(blocks) >= len(shown) and all(a is b for a, b in zip(shown, blocks))
                    and formats == self._formats)
        if not appended:
            # A resume replaced blocks from the rollback point on, or a column changed format:
            # rebuild rather than patch.
            self.clear()
            shown = []
        follow = not shown or self.cursor_row >= len(shown) - 1
        for block in blocks[len(shown):]:
            self.add_row(*(Text(self.convert(v), justify="right") for v in block_row(block, formats)),
                         key=str(block.epoch))
        self._shown = list(blocks)
        self._formats = formats
        if follow and blocks:
            self.move_cursor(row=len(blocks) - 1, animate=False)
