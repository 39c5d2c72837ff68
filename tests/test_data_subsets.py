"""benchmarks/data_subsets.py: a prefix is the shorter run, a join keeps every sample of each run,
and both are data files that `train` reads."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import data_subsets  # noqa: E402

from molpt_tui.physics.data_file import load_data  # noqa: E402


def _run(path: Path, seed: int, n: int = 12, temps=(300.0, 367.4, 450.0)) -> Path:
    rng = np.random.default_rng(seed)
    arrays = {
        "positions": rng.normal(size=(len(temps), n, 4, 3)).astype(np.float32),
        "temperatures": np.array(temps),
        "potential_energy": rng.normal(size=(len(temps), n)),
        "atom_names": np.array(["C", "C", "O", "N"]),
        "residue_names": np.array(["ALA"] * 4),
        "swap_acceptance": np.array([0.5, 0.25]) if seed % 2 else np.array([0.3, 0.45]),
        "swap_attempts": np.array([10, 10]) if seed % 2 else np.array([30, 30]),
        "meta": np.array(repr({"format": "molpt-tui.replica-data", "version": 1, "seed": seed})),
    }
    np.savez_compressed(path, **arrays)
    return path


def test_a_prefix_is_the_first_samples_and_loads(tmp_path: Path) -> None:
    src = _run(tmp_path / "run.npz", seed=1)
    data_subsets.main(["--data", str(src), "--sizes", "5"])
    out = tmp_path / "run.n5.npz"
    sub, full = load_data(out), load_data(src)
    assert sub.positions.shape == (3, 5, 4, 3)
    np.testing.assert_array_equal(sub.positions, full.positions[:, :5])
    np.testing.assert_array_equal(sub.potential_energy, full.potential_energy[:, :5])
    assert "first 5 of 12" in sub.meta["subset"]


def test_a_join_keeps_each_run_in_order_and_weighs_the_swap_rates(tmp_path: Path) -> None:
    a, b = _run(tmp_path / "a.npz", seed=1), _run(tmp_path / "b.npz", seed=2, n=8)
    data_subsets.main(["--data", str(a), "--join", str(b)])
    joined, ra, rb = load_data(tmp_path / "a.joined20.npz"), load_data(a), load_data(b)
    np.testing.assert_array_equal(joined.positions, np.concatenate([ra.positions, rb.positions], axis=1))
    # 10 attempts at 0.5 and 30 at 0.3 -> 0.35; 10 at 0.25 and 30 at 0.45 -> 0.40
    np.testing.assert_allclose(joined.meta["swap_acceptance"], [0.35, 0.40])
    assert list(joined.meta["swap_attempts"]) == [40, 40]
    meta = ast.literal_eval(str(np.load(tmp_path / "a.joined20.npz")["meta"]))
    assert meta["joined_seeds"] == [1, 2] and meta["seed"] == 1


def test_runs_of_another_ladder_do_not_join_and_nothing_is_replaced(tmp_path: Path) -> None:
    a = _run(tmp_path / "a.npz", seed=1)
    other = _run(tmp_path / "o.npz", seed=2, temps=(300.0, 400.0, 450.0))
    with pytest.raises(SystemExit, match="temperatures differ"):
        data_subsets.main(["--data", str(a), "--join", str(other)])
    assert not (tmp_path / "a.joined24.npz").exists()
    with pytest.raises(SystemExit, match="holds 12 samples"):
        data_subsets.main(["--data", str(a), "--sizes", "13"])
    kept = tmp_path / "a.n5.npz"
    kept.write_bytes(b"mine")
    data_subsets.main(["--data", str(a), "--sizes", "5"])
    assert kept.read_bytes() == b"mine"
