from __future__ import annotations

import pytest
from molpt_testdata import STRUCTURES, TINY_DATA, TINY_TRAIN

# Whole files of integration tests: real subprocesses, signals, the TUI, wheel builds. Tests
# elsewhere that start a subprocess carry `@pytest.mark.integration` themselves.
INTEGRATION_FILES = {"test_bad_inputs.py", "test_signals.py", "test_packaging.py", "test_live_path.py",
                     "test_train_app.py", "test_watch_app.py", "test_snapshots.py", "test_robustness.py",
                     "test_pt_monitor.py",
                     # every test renders the multi-panel matplotlib figure (~2 s each)
                     "test_plotting.py",
                     # real MD, training runs, compiled kernels or several processes: minutes, not seconds
                     "test_trainer.py", "test_torch_energy.py", "test_data.py", "test_data_inputs.py", "test_pt.py",
                     "test_distributed.py", "test_threads.py", "test_checkpoint_schema.py", "test_validation_figure.py",
                     "test_data_phase.py", "test_umbrella.py"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in INTEGRATION_FILES:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def ala2_system():
    from molpt_tui.physics.systems import build_system

    return build_system(STRUCTURES / "alanine_dipeptide.pdb", ["amber99sbildn.xml"])


@pytest.fixture(scope="session")
def aa_obc1_system():
    from molpt_tui.physics.systems import build_system

    return build_system(STRUCTURES / "ala_ala.pdb", ["amber99sbildn.xml", "implicit/obc1.xml"])




@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A small quickstart data file (alanine dipeptide, vacuum, 300/367/450 K), made once."""
    from molpt_tui.config import load_config
    from molpt_tui.physics.data import simulate

    path = tmp_path_factory.mktemp("tiny_data") / "quickstart_tiny.npz"
    simulate(load_config("quickstart", TINY_DATA + [f"data.path={path}"]), progress=False, log=lambda *_: None)
    return path


@pytest.fixture
def tiny_config(tiny_data):
    from molpt_tui.config import load_config

    def make(*extra):
        return load_config("quickstart", TINY_DATA + TINY_TRAIN + [f"data.path={tiny_data}", *extra])

    return make
