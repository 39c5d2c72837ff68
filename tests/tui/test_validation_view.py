"""The validation pane's text: it fits any pane, says what each histogram is, and shows a
collapsed map as one."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from molpt_tui.training.validation_hist import validation_histograms
from molpt_tui.tui.validation_view import render_validation


def _event(collapsed: bool = False, peptide: bool = True, seed: int = 0):
    rng = np.random.default_rng(seed)
    hot, cold = rng.normal(-30, 4, 400), rng.normal(-45, 3, 400)
    if collapsed:  # every mapped sample at the data's mean: a map that lost the spread
        cold_to_hot, hot_to_cold = np.full(400, -30.0), np.full(400, -45.0)
    else:
        cold_to_hot, hot_to_cold = rng.normal(-30, 4, 400), rng.normal(-45, 3, 400)
    rama = None
    if peptide:
        basin = (rng.normal(-80, 15, 400), rng.normal(150, 15, 400))
        other = (rng.normal(60, 10, 400), rng.normal(40, 10, 400))
        mapped = basin if collapsed else (np.r_[basin[0][:300], other[0][:100]], np.r_[basin[1][:300], other[1][:100]])
        both = (np.r_[basin[0][:300], other[0][:100]], np.r_[basin[1][:300], other[1][:100]])
        rama = {"cold": both, "hot_to_cold": mapped, "hot": both, "cold_to_hot": mapped}
    return validation_histograms(12, hot=hot, cold_to_hot=cold_to_hot, cold=cold, hot_to_cold=hot_to_cold,
                                 rama=rama, rama_label="ALA2")


def test_the_pane_names_the_split_the_epoch_and_each_histogram():
    text = "\n".join(render_validation(_event(), 160, 40, t_cold=300, t_hot=450))
    assert "validation pairs (400), epoch 12" in text
    assert "β_hot·U 450 K: hot data vs T(cold data)" in text and "β_cold·U 300 K: cold data vs T⁻¹(hot data)" in text
    assert "phi/psi cold data (ALA2)" in text and "T⁻¹(hot data) → cold" in text
    assert "kT" in text


def test_a_collapsed_map_shows_a_lower_overlap():
    def overlap_of(lines):
        head = lines[0]
        return float(head.split("overlap hot ")[1].split(",")[0])

    good = overlap_of(render_validation(_event(), 120, 30))
    bad = overlap_of(render_validation(_event(collapsed=True), 120, 30))
    assert good > 0.8 and bad < 0.3


def test_without_a_backbone_it_says_so_and_before_an_evaluation_it_waits():
    text = "\n".join(render_validation(_event(peptide=False), 100, 30))
    assert "no peptide backbone: energy histograms only" in text
    assert render_validation(None, 100, 30)[0].startswith("Validation: waiting")


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 300), st.integers(0, 80), st.booleans(), st.booleans(), st.booleans())
def test_any_pane_size_fits_and_ascii_stays_ascii(width, height, ascii_only, peptide, collapsed):
    lines = render_validation(_event(collapsed=collapsed, peptide=peptide), width, height, ascii_only=ascii_only,
                              t_cold=300, t_hot=450)
    assert len(lines) <= height
    assert all(len(line) <= width for line in lines)
    if ascii_only:
        assert all(line.isascii() for line in lines)


# --- on screen ------------------------------------------------------------------------------------
async def test_d_shows_the_latest_validation_histograms_of_a_watched_run(tmp_path, wait):
    from tui_fakes import T0, jsonl, train_stream

    from molpt_tui.training.run_dir import RunDirectory
    from molpt_tui.tui.app import MonitorApp
    from molpt_tui.tui.screens import ValidationScreen
    from molpt_tui.tui.source import WatchedRun

    early, late = _event(collapsed=True), _event()
    early.epoch, early.t, late.epoch, late.t = 0, T0 + 1, 10, T0 + 10
    stream = train_stream(10)
    (tmp_path / "metrics.jsonl").write_text(jsonl([*stream, early, late]), encoding="utf-8")
    app = MonitorApp(WatchedRun(RunDirectory(tmp_path), read_only=True), poll_interval=0.02, refresh_hz=10.0)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait(pilot, lambda: app.state.validation is not None and app.state.validation.epoch == 10,
                   what="the histograms")
        await pilot.press("d")
        await pilot.pause(0.2)
        assert isinstance(app.screen, ValidationScreen)
        text = str(app.screen.query_one("#validation-body").render())
        assert "validation pairs (400), epoch 10" in text and "phi/psi cold data (ALA2)" in text
        run = app.state.history.run
        assert f"β_hot·U {run.t_hot:g} K: hot data vs T(cold data)" in text
        await pilot.press("escape")
        await pilot.pause(0.1)
        assert not isinstance(app.screen, ValidationScreen)
        assert app.ui_errors == 0
