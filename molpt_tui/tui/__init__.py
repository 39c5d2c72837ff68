"""Textual monitor for training (live) and for attaching to a run directory (watch).

Imports are lazy so `import molpt_tui.tui` stays cheap; the headless paths never import it.
"""
from __future__ import annotations

from typing import Any

__all__ = ["EventBatch", "MonitorApp", "TuiSink", "run_train_app", "run_watch_app", "save_screenshot"]

_WHERE = {
    "EventBatch": "messages",
    "TuiSink": "sink",
    "MonitorApp": "app",
    "run_train_app": "app",
    "run_watch_app": "app",
    "save_screenshot": "app",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        from importlib import import_module

        return getattr(import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(name)
