"""benchmarks/checkpoints_on_test.py --by-state: the test pairs grouped by backbone state."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from molpt_testdata import TINY_DATA, TINY_TRAIN

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import checkpoints_on_test  # noqa: E402


@pytest.fixture(scope="module")
def finished_run(tiny_data, tmp_path_factory):
    from molpt_tui.cli import main

    root = tmp_path_factory.mktemp("by_state")
    data = root / "tiny.npz"
    shutil.copy(tiny_data, data)
    run = root / "run"
    sets = [s for item in TINY_DATA + TINY_TRAIN + [f"data.path={data}"] for s in ("--set", item)]
    assert main(["train", "--no-ui", "--epochs", "2", "--out", str(run), *sets]) == 0
    return run


def test_the_backbone_groups_partition_the_test_pairs_and_average_to_the_whole(finished_run):
    from molpt_tui.training.evaluation import evaluate

    with checkpoints_on_test.opened_run(finished_run) as (cfg, ms, split, setup):
        transport, epoch = checkpoints_on_test.load_map(cfg, ms, split, finished_run / "molecular_pt_300_450.pt")
        whole = evaluate(transport, setup, 64, setup.test)
        groups = checkpoints_on_test.state_groups(ms, transport, setup, 64)
    assert epoch >= 0 and whole.n_pairs == len(setup.test) > 0
    states = ("beta", "alphaR", "phi>0", "cis ACE1-ALA2", "cis ALA2-NME3")
    assert [(g.side, g.state) for g in groups] == [(side, state) for side in ("hot", "cold") for state in states]
    for side in ("hot", "cold"):
        backbone = [g for g in groups if g.side == side and not g.state.startswith("cis")]
        # beta, alphaR and phi > 0 are one state each per configuration: every pair in exactly one
        assert sum(g.n_pairs for g in backbone) == whole.n_pairs
        # acceptance is a mean over pairs, so the groups' means weighted by their sizes give the whole
        weighted = sum(g.n_pairs * g.evaluation.acc_flow for g in backbone if g.n_pairs) / whole.n_pairs
        assert weighted == pytest.approx(whole.acc_flow, abs=1e-9)
        naive = sum(g.n_pairs * g.evaluation.acc_naive for g in backbone if g.n_pairs) / whole.n_pairs
        assert naive == pytest.approx(whole.acc_naive, abs=1e-9)
    assert all((g.evaluation is None) == (g.n_pairs == 0) for g in groups)


def test_the_command_prints_one_line_per_group(finished_run, capsys):
    checkpoints_on_test.main([str(finished_run), "molecular_pt_300_450.pt", "--by-state", "--min-pairs", "1000000"])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("molecular_pt_300_450.pt (epoch ") and "test flow-swap acceptance" in out[0]
    assert len(out) == 1 + 10 and all("(fewer than 1000000, not reported)" in line for line in out[1:])
    assert out[1].startswith("  hot configuration beta: ") and out[6].startswith("  cold configuration beta: ")
