"""Keeping one failing pane from taking the monitor down.

A pane that raises while drawing would, left to Textual, end the whole app, and with a live
run that used to look like the user pressing stop. Panes instead hand the exception to the app
(`report`), draw a one-line placeholder, and the app logs it and raises a toast once per
distinct error. The trainer is another process and is never told anything about it.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from textual.widget import Widget


@runtime_checkable
class ErrorReporter(Protocol):
    def report_error(self, where: str, error: BaseException) -> None:
        """Show `error` (raised by `where`) in the log and a toast; never raises."""


def report(widget: Widget, where: str, error: BaseException) -> None:
    """Pass a widget's exception to the app if it can take it; otherwise swallow it, since
    raising from here would bring down the app that the guard exists to keep up."""
    try:
        app = widget.app
    except Exception:  # not attached any more (the app is shutting down)
        return
    if isinstance(app, ErrorReporter):
        app.report_error(where, error)


def describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__
