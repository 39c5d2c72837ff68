"""Checkpoints that unpickle safely but hold the wrong things are refused with one line naming the
file, the key and a fix; pickles that would run code are refused without running it."""
from __future__ import annotations

import copy
import math
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from molpt_tui.errors import UserError
from molpt_tui.training.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    load_checkpoint,
    make_payload,
    save_checkpoint,
    validate_checkpoint,
)
from molpt_tui.training.schema import SchemaError
from molpt_tui.training.setup import build_transport
from molpt_tui.training.state import TrainingState


@pytest.fixture(scope="module")
def built():
    """(cfg, ms, a state after one optimiser step, its payload, data): no MD, no energy engine."""
    from molpt_testdata import TINY_TRAIN

    from molpt_tui.config import load_config
    from molpt_tui.physics.systems import system_from_config

    cfg = load_config("quickstart", TINY_TRAIN)
    ms = system_from_config(cfg)
    rng = np.random.default_rng(0)
    data = torch.tensor(ms.positions[None] + rng.normal(0, 0.003, (64, ms.n_atoms, 3)))
    torch.manual_seed(0)
    state = TrainingState.create(cfg, build_transport(cfg, ms, data[:32], data[32:]))
    y, logdet = state.transport(data[:8])
    (y.square().sum() - logdet.sum()).backward()
    state.optimizer.step()  # moment estimates in the optimizer state
    state.epoch = 1
    state.best_epoch, state.best_score, state.best_loss = 1, 3.5, 12.0
    payload = make_payload(state.state_dict(), cfg, ms)
    return cfg, ms, state, payload, data


def fresh_state(built) -> TrainingState:
    """A state as a resumed trainer builds it: same config and data, other initial weights."""
    cfg, ms, _, _, data = built
    torch.manual_seed(1)
    return TrainingState.create(cfg, build_transport(cfg, ms, data[:32], data[32:]))


def write(path: Path, data) -> Path:
    torch.save(data, path)
    return path


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


def test_a_valid_checkpoint_round_trips(built, tmp_path):
    _, _, state, payload, _ = built
    path = save_checkpoint(tmp_path / "last.pt", payload)
    data = load_checkpoint(path)
    assert data["format"] == CHECKPOINT_FORMAT and data["format_version"] == CHECKPOINT_VERSION
    assert data["epoch"] == 1 and data["best_epoch"] == 1 and data["config"]["training"]["epochs"] >= 1
    restored = fresh_state(built)
    restored.load_state_dict(data)
    assert (restored.epoch, restored.best_score, restored.best_loss) == (1, 3.5, 12.0)
    for key, value in state.transport.state_dict().items():
        assert torch.equal(restored.transport.state_dict()[key], value), key
    assert torch.equal(restored.shuffle.get_state(), state.shuffle.get_state())


def _model_key(payload, floating=True):
    return next(k for k, v in payload["model"].items() if v.is_floating_point() == floating and v.numel() > 1)


def _set(path: str, value):
    def change(data):
        *parents, last = path.split(".")
        target = data
        for part in parents:
            target = target[part]
        target[last] = value
    return change


def _delete(path: str):
    def change(data):
        *parents, last = path.split(".")
        target = data
        for part in parents:
            target = target[part]
        del target[last]
    return change


def _poison_model(value: float):
    def change(data):
        key = _model_key(data)
        tensor = data["model"][key].clone()
        tensor.view(-1)[1] = value
        data["model"][key] = tensor
    return change


def _poison_optimizer(value: float):
    def change(data):
        index = next(iter(data["optimizer"]["state"]))
        tensor = data["optimizer"]["state"][index]["exp_avg"].clone()
        tensor.view(-1)[0] = value
        data["optimizer"]["state"][index]["exp_avg"] = tensor
    return change


# (case, change, key named in the message)
CASES = [
    # missing keys
    ("no epoch", _delete("epoch"), "epoch"),
    ("no model", _delete("model"), "model"),
    ("no optimizer", _delete("optimizer"), "optimizer"),
    ("no rng", _delete("rng"), "rng"),
    ("no shuffle state", _delete("rng.shuffle"), "rng.shuffle"),
    ("no alerts", _delete("alerts"), "alerts"),
    ("no schedule scale", _delete("schedule.scale"), "schedule.scale"),
    ("no best score", _delete("best_score"), "best_score"),
    ("no config", _delete("config"), "config"),
    ("no system", _delete("system"), "system"),
    ("no format version", _delete("format_version"), "format_version"),
    # wrong types
    ("epoch a string", _set("epoch", "3"), "epoch"),
    ("epoch a float", _set("epoch", 2.5), "epoch"),
    ("epoch a bool", _set("epoch", True), "epoch"),
    ("epoch negative", _set("epoch", -1), "epoch"),
    ("format version a string", _set("format_version", "2"), "format_version"),
    ("best score a string", _set("best_score", "low"), "best_score"),
    ("best score NaN", _set("best_score", math.nan), "best_score"),
    ("best loss a list", _set("best_loss", [1.0]), "best_loss"),
    ("best epoch after the epoch", _set("best_epoch", 7), "best_epoch"),
    ("nan failures negative", _set("nan_failures", -2), "nan_failures"),
    ("rng a string", _set("rng", "seed"), "rng"),
    ("rng state a float tensor", _set("rng.shuffle", torch.zeros(5056)), "rng.shuffle"),
    ("rng state a list", _set("rng.torch", [1, 2, 3]), "rng.torch"),
    ("alerts a list", _set("alerts", []), "alerts"),
    ("alert epoch a string", _set("alerts.epoch", "1"), "alerts.epoch"),
    ("alert version a string", _set("alerts.version", "1"), "alerts.version"),
    ("alert active not a table", _set("alerts.active", ["loss_rising"]), "alerts.active"),
    ("alert active epoch a string", _set("alerts.active", {"loss_rising": "3"}), "alerts.active.loss_rising"),
    ("schedule scale a string", _set("schedule.scale", "1.0"), "schedule.scale"),
    ("schedule scale zero", _set("schedule.scale", 0.0), "schedule.scale"),
    ("schedule bad epochs a float", _set("schedule.bad_epochs", 1.5), "schedule.bad_epochs"),
    ("model a list", _set("model", [1, 2]), "model"),
    ("model empty", _set("model", {}), "model"),
    ("optimizer param groups empty", _set("optimizer.param_groups", []), "optimizer.param_groups"),
    ("atom names not a list", _set("system.atom_names", "C H"), "system.atom_names"),
    ("atom count disagrees", _set("system.n_atoms", 5), "system.atom_names"),
    ("config model not a table", _set("config.model", "mlp"), "config.model"),
    ("version not a string", _set("versions.torch", 2.1), "versions.torch"),
    ("selection not a table", _set("selection", "best"), "selection"),
    ("selection of another epoch", _set("selection", {"epoch": 9, "score": 0.3, "metric": "validation KL"}),
     "selection.epoch"),
    ("selection score NaN", _set("selection", {"epoch": 1, "score": math.nan, "metric": "validation KL"}),
     "selection.score"),
    ("selection without its metric", _set("selection", {"epoch": 1, "score": 0.3}), "selection.metric"),
    ("energy evaluations negative", _set("energy_evals", -1), "energy_evals"),
    ("elapsed time a string", _set("elapsed_s", "1 h"), "elapsed_s"),
    # non-finite weights
    ("NaN weight", _poison_model(math.nan), "model."),
    ("inf weight", _poison_model(math.inf), "model."),
    ("NaN moment", _poison_optimizer(math.nan), "optimizer.state."),
    ("-inf moment", _poison_optimizer(-math.inf), "optimizer.state."),
]


@pytest.mark.parametrize(("change", "key"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_wrong_contents_are_one_line_naming_file_key_and_fix(built, tmp_path, change, key):
    data = copy.deepcopy(dict(built[3], format=CHECKPOINT_FORMAT, format_version=CHECKPOINT_VERSION))
    change(data)
    path = write(tmp_path / "last.pt", data)
    before = snapshot(tmp_path)
    with pytest.raises(UserError) as info:
        load_checkpoint(path)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"{path}: ")
    # a key ending in "." names a prefix: the tensor's own name follows
    assert (f"'{key}" if key.endswith(".") else f"'{key}'") in text, text
    assert "--force" in text
    assert snapshot(tmp_path) == before


def test_another_format_or_an_older_version_is_refused(built, tmp_path):
    data = dict(built[3], format=CHECKPOINT_FORMAT, format_version=1)
    with pytest.raises(UserError, match=r"format 1 was written by an older molpt-tui.*--force"):
        load_checkpoint(write(tmp_path / "old.pt", data))
    with pytest.raises(UserError, match=r"newer than this molpt-tui"):
        load_checkpoint(write(tmp_path / "new.pt", dict(data, format_version=CHECKPOINT_VERSION + 1)))
    with pytest.raises(UserError, match=r"not a molpt-tui checkpoint"):
        load_checkpoint(write(tmp_path / "other.pt", {"state_dict": {}}))
    with pytest.raises(UserError, match=r"not a molpt-tui checkpoint"):
        load_checkpoint(write(tmp_path / "list.pt", [1, 2, 3]))


def test_validation_is_usable_on_an_already_loaded_payload(built):
    data = dict(built[3], format=CHECKPOINT_FORMAT, format_version=CHECKPOINT_VERSION)
    assert validate_checkpoint(data, "x.pt") is data
    with pytest.raises(UserError, match=r"^x\.pt: checkpoint key 'epoch' must be an integer, got a string"):
        validate_checkpoint(dict(data, epoch="1"), "x.pt")


# --- shapes: checked when the snapshot is loaded into a model ----------------------------------------

def _wrong_model_shape(data):
    key = _model_key(data)
    data["model"][key] = torch.zeros(data["model"][key].numel() + 3)


def _wrong_moment_shape(data):
    index = next(iter(data["optimizer"]["state"]))
    data["optimizer"]["state"][index]["exp_avg"] = torch.zeros(7, 3)


def _missing_model_tensor(data):
    del data["model"][_model_key(data)]


def _wrong_param_groups(data):
    data["optimizer"]["param_groups"][0]["params"] = data["optimizer"]["param_groups"][0]["params"][:-1]


def _short_rng(data):
    data["rng"]["torch"] = torch.zeros(16, dtype=torch.uint8)


def _bad_generator_state(data):
    data["rng"]["shuffle"] = torch.zeros(3, dtype=torch.uint8)


@pytest.mark.parametrize(("change", "key"), [
    (_wrong_model_shape, "model"), (_missing_model_tensor, "model"), (_wrong_moment_shape, "optimizer"),
    (_wrong_param_groups, "optimizer"), (_short_rng, "rng.torch"), (_bad_generator_state, "rng.shuffle"),
], ids=["model shape", "model key", "moment shape", "param groups", "torch rng", "shuffle rng"])
def test_a_snapshot_that_does_not_fit_the_model_is_refused_on_load(built, change, key):
    data = copy.deepcopy(built[3])
    change(data)
    validate_checkpoint(dict(data, format=CHECKPOINT_FORMAT, format_version=CHECKPOINT_VERSION), "x.pt")
    state = fresh_state(built)
    rng_before = torch.get_rng_state()
    with pytest.raises(SchemaError) as info:
        state.load_state_dict(data)
    assert info.value.key == key
    assert torch.equal(torch.get_rng_state(), rng_before)  # the global RNG is set last, only on success


def test_the_trainer_refuses_a_checkpoint_of_another_shape_naming_it(built, tiny_config, tmp_path):
    from molpt_tui.physics.data import load_data
    from molpt_tui.physics.systems import system_from_config
    from molpt_tui.training.control import TrainingControl
    from molpt_tui.training.setup import build_setup, resolve_device, split_data
    from molpt_tui.training.trainer import Trainer

    cfg = tiny_config()
    ms = system_from_config(cfg)
    data = copy.deepcopy(built[3])
    _wrong_model_shape(data)
    with build_setup(cfg, ms, split_data(cfg, load_data(cfg.data_path, ms)), resolve_device("cpu"),
                     log=lambda text: None) as setup:
        with pytest.raises(UserError) as info:
            Trainer(cfg, setup, [], TrainingControl(), artifacts=None, resume_from=data,  # type: ignore[arg-type]
                    resume_path=tmp_path / "last.pt")
    text = str(info.value)
    assert text.startswith(f"{tmp_path / 'last.pt'}: checkpoint key 'model' does not fit this model")
    assert "\n" not in text and "--force" in text
    assert list(tmp_path.iterdir()) == []


# --- pickles that would run code ---------------------------------------------------------------------

class _Payload:
    """Unpickling this would create a directory: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def _load_quietly(path: Path) -> tuple[UserError, list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(UserError) as info:
            load_checkpoint(path)
    return info.value, caught


@pytest.mark.parametrize("where", ["top level", "inside the model", "raw pickle", "raw pickle protocol 2"])
def test_a_pickle_that_runs_code_is_refused_and_does_not_run(built, tmp_path, where):
    marker = tmp_path / "code-ran"
    path = tmp_path / "last.pt"
    evil = _Payload(marker)
    if where == "top level":
        torch.save({"format": CHECKPOINT_FORMAT, "payload": evil}, path)
    elif where == "inside the model":
        data = copy.deepcopy(dict(built[3], format=CHECKPOINT_FORMAT, format_version=CHECKPOINT_VERSION))
        data["model"] = dict(data["model"], extra=evil)
        torch.save(data, path)
    else:
        path.write_bytes(pickle.dumps(evil, protocol=4 if where == "raw pickle" else 2))
    error, caught = _load_quietly(path)
    assert not marker.exists()
    text = str(error)
    assert text.startswith(f"{path}: corrupt or unreadable checkpoint (") and "\n" not in text
    assert "--force" in text
    assert caught == []  # torch's multi-line warning about weights_only does not get through


@pytest.mark.parametrize("content", [b"", b"\x80\x04", b"PK\x03\x04" + b"\0" * 40, os.urandom(2000)],
                         ids=["empty", "truncated pickle", "broken zip", "noise"])
def test_damaged_files_are_one_line(tmp_path, content):
    path = tmp_path / "best.pt"
    path.write_bytes(content)
    error, caught = _load_quietly(path)
    assert str(error).startswith(f"{path}: corrupt or unreadable checkpoint") and "\n" not in str(error)
    assert caught == []
