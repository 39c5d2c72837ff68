"""One row per LogBlock: the adaptive-schedule epochs with held-out evaluation.

Every column has one number format, chosen from all of its values (a column that ever holds a
value ≥ 1e5 is in scientific notation throughout), and numbers are right-aligned, so a column
reads at a glance. Column widths are those of the widest value each format can print, fixed
until a format changes (the table is then rebuilt): the table never jitters, and rows drawn
before Textual re-measured its columns can never show stale, cut cells. Wider than its pane, the
table scrolls sideways with [ and ].
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


# The widest text each column's format can print, for its fixed width.
WIDEST_KT = {"fixed": "-99999.99", "sci": "-1.234e308"}
WIDEST_ACC = {"fixed": "0.136±0.032", "sci": "1.23e-10±4.56e-10"}
WIDEST_NAIVE = {"fixed": "0.136", "sci": "1.23e-10"}


def column_widths(formats: Formats, convert: Callable[[str], str] = str) -> list[int]:
    """Cell widths of COLUMNS for these formats (headers included)."""
    *energy, acc = formats
    samples = ["9999999", *(WIDEST_KT[f] for f in energy), "1.00e-10", "diverged", WIDEST_ACC[acc],
               WIDEST_NAIVE[acc], "100.0%", "100.0%"]
    return [max(len(convert(label)), len(convert(sample))) for label, sample in zip(COLUMNS, samples)]


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
        if not self.columns:
            self._set_columns(table_formats([]))

    def _set_columns(self, formats: Formats) -> None:
        self.clear(columns=True)
        for label, width in zip(COLUMNS, column_widths(formats, self.convert)):
            self.add_column(self.convert(label), width=width)

    @property
    def overflows(self) -> bool:
        return self.virtual_size.width > self.scrollable_content_region.width

    def show(self, blocks: list[LogBlock]) -> None:
        shown = self._shown
        formats = table_formats(blocks)
        if formats != self._formats or not self.columns:
            # A column changed format (and so width): new columns, every row again. Rows can
            # also arrive before this widget's own mount handler ran (the app's first redraw).
            x = self.scroll_x
            self._set_columns(formats)
            shown = []
            if x:  # where the user had scrolled to, once the new rows are measured
                self.call_after_refresh(self.scroll_to, x=x, animate=False)
        elif not (len(blocks) >= len(shown) and all(a is b for a, b in zip(shown, blocks))):
            # A resume replaced blocks from the rollback point on: rebuild rather than patch.
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
