"""The completion banner says when training.patience ended a run before its last epoch, since
the progress bar alone (8 % of the epochs) would read as an unfinished run."""
from __future__ import annotations

import pytest

from molpt_tui.training.events import Finished, RunStarted
from molpt_tui.tui.state import MonitorState

REASON = "ended early: the validation KL has not improved for 2 epochs, since epoch 1 (training.patience = 2)"


@pytest.mark.parametrize("epoch, message, title", [
    (3, REASON, "Training ended early at epoch 3/40"),
    (40, "Training completed", "Training completed at epoch 40/40"),
])
def test_banner_title_says_early_end(epoch: int, message: str, title: str) -> None:
    state = MonitorState()
    state.apply([RunStarted(run_dir="r", preset="p", model="m", t_cold=300.0, t_hot=450.0, epochs=40, batch_size=8,
                            lr=1e-3, device="cpu", n_params=10, engine="openmm"),
                 Finished(status="completed", epoch=epoch, message=message)], notify=False)
    lines = state.summary_lines()
    assert lines[0].startswith(title)
    assert (REASON in lines) == (message == REASON)
