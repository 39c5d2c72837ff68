"""What the trainer is handed to leave results behind: it names no file and draws no figure.

The application layer implements this with the run directory (its file names) and the report
layer's plotting; tests implement it in a few lines. Keeping it a Protocol keeps `training`
below `report` in the layers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Protocol

from .history import History

ArtifactLabel = Literal["last", "best", "final"]


class RunArtifacts(Protocol):
    @property
    def location(self) -> str:
        """Where the results go (the run directory), as RunStarted reports it."""
        ...

    def save_checkpoint(self, label: ArtifactLabel, payload: dict[str, Any]) -> Path:
        """Write `payload` (see `checkpoint.make_payload`) as the `label` checkpoint, atomically;
        returns its path. "final" is the model file a completed run leaves."""
        ...

    def write_png(self, history: History, status: str) -> Path | None:
        """Draw the loss curves of `history`; `status` is "running" for a mid-run request, else
        how the run ended. May raise: the trainer reports a failure and carries on."""
        ...
