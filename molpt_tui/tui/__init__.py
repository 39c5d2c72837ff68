"""Textual monitor for training (live) and for attaching to a run directory (watch).

Imports are lazy so `import molpt_tui.tui` stays cheap; the headless paths never import it.
"""
from __future__ import annotations

from typing import Any

__all__ = ["EventBatch", "LiveRun", "MonitorApp", "RunSource", "TrainerHandle", "WatchedRun", "run_monitor",
           "save_screenshot"]

_WHERE = {
    "EventBatch": "messages",
    "LiveRun": "source",
    "MonitorApp": "app",
    "RunSource": "source",
    "TrainerHandle": "source",
    "WatchedRun": "source",
    "run_monitor": "app",
    "save_screenshot": "app",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        from importlib import import_module

        return getattr(import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(name)
