"""Replica-exchange data: physics sanity, swap statistics, file format and safety."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from molpt_tui.config import load_config
from molpt_tui.errors import UserError
from molpt_tui.physics.data import load_data, simulate, swap_log_acceptance
from molpt_tui.physics.units import beta

SMALL = ["data.n_samples=1500", "data.stride=20", "data.swap_every=20", "data.equilibration_ps=2.0",
         "temperatures.ladder=[300.0, 360.0, 450.0]"]


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "qs.npz"
    cfg = load_config("quickstart", SMALL + [f"data.path={path}"])
    simulate(cfg, progress=False, log=lambda *_: None)
    return cfg, path


def test_mean_energy_rises_with_temperature(small_data):
    cfg, path = small_data
    data = load_data(path)
    assert data.positions.shape == (3, 1500, 22, 3)
    means = data.potential_energy.mean(axis=1)
    assert np.all(np.diff(means) > 0), means
    # equipartition-scale check: 3N-6 = 60 harmonic-ish DOF -> ~ (60/2) k_B dT per temperature step
    assert 0.3 * 30 * 0.0083145 * 60 < means[1] - means[0] < 3 * 30 * 0.0083145 * 60


def test_recorded_swap_acceptance_matches_saved_energies(small_data):
    cfg, path = small_data
    data = load_data(path)
    temps = data.temperatures
    for i in range(len(temps) - 1):
        u_i, u_j = data.potential_energy[i], data.potential_energy[i + 1]
        log_acc = swap_log_acceptance(beta(temps[i]), beta(temps[i + 1]), u_i, u_j)
        terms = np.minimum(1.0, np.exp(np.minimum(log_acc, 0.0)))
        recomputed = terms.mean()
        recorded = data.meta["swap_acceptance"][i]
        attempts = data.meta["swap_attempts"][i]
        # binomial error of the recorded rate plus the error of the recomputed mean (samples are
        # correlated, so allow a factor of several over the iid estimate)
        sigma = np.sqrt(recorded * (1 - recorded) / attempts) + terms.std() / np.sqrt(len(terms))
        assert abs(recorded - recomputed) < 6 * sigma + 0.02, (recorded, recomputed, sigma)
        assert 0.05 < recorded < 0.95


def test_file_round_trips_and_is_not_overwritten(small_data):
    cfg, path = small_data
    data = load_data(path)
    assert list(data.temperatures) == [300.0, 360.0, 450.0]
    assert data.meta["constraints"] == "none"
    assert data.meta["stride"] == 20 and data.meta["timestep_fs"] == 1.0
    from molpt_tui.physics.systems import system_from_config

    ms = system_from_config(cfg)
    load_data(path, ms)  # matches its own system
    before = path.read_bytes()
    with pytest.raises(UserError, match="never overwritten"):
        simulate(cfg, progress=False)
    assert path.read_bytes() == before


def test_data_of_another_system_is_refused(small_data):
    cfg, path = small_data
    from molpt_tui.physics.systems import system_from_config

    other = system_from_config(load_config("aa_300_450"))
    with pytest.raises(UserError, match="another system"):
        load_data(path, other)


def test_corrupt_data_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(UserError, match="unreadable data file"):
        load_data(bad)


def test_ctrl_c_leaves_no_file_posing_as_complete(tmp_path):
    out = tmp_path / "d.npz"
    proc = subprocess.Popen([sys.executable, "-m", "molpt_tui", "simulate", "--out", str(out),
                             "--set", "data.n_samples=1000000"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(6)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    assert proc.returncode == 130, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".npz")]
