"""training.ema_decay: the moving average of the weights is what is evaluated, selected and saved;
the optimizer's weights travel beside it, so a resume goes on exactly and a run without the
average trains on from them."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from test_trainer import _train, make_setup

from molpt_tui.errors import UserError
from molpt_tui.training.checkpoint import load_checkpoint
from molpt_tui.training.evaluation import evaluate
from molpt_tui.training.events import EpochMetrics, LogBlock, Message
from molpt_tui.training.events import TestEvaluation as OnTest
from molpt_tui.training.schema import SchemaError
from molpt_tui.training.setup import build_transport
from molpt_tui.training.state import TrainingState, check_state_dict, ema_weight


@given(decay=st.floats(1e-6, 0.99999), n=st.integers(1, 10**6))
def test_each_step_weighs_what_the_bias_corrected_average_gives_it(decay, n):
    w = ema_weight(decay, n)
    assert ema_weight(decay, 1) == 1.0          # the first step is copied: no untrained map left over
    assert 1.0 - decay <= w <= 1.0 + 1e-12      # never below the stated decay's weight
    assert ema_weight(decay, n + 1) <= w        # later steps weigh less, down to 1 - decay


def test_the_average_is_the_bias_corrected_exponential_average_of_the_trained_weights(parts):
    cfg, _, ms, data = parts
    decay = cfg.training.ema_decay
    state = _state(cfg, ms, data, 0)
    seen: list[dict[str, torch.Tensor]] = []
    for _ in range(7):
        _steps(state, data, 1)
        seen.append({k: v.detach().clone() for k, v in state.transport.flow.named_parameters()})
    assert state.ema_count == 7
    # the closed form: sum_k (1 - d) d^(n-k) w_k / (1 - d^n)
    n = len(seen)
    coef = [(1 - decay) * decay ** (n - k) / (1 - decay ** n) for k in range(1, n + 1)]
    assert sum(coef) == pytest.approx(1.0)
    averaged = dict(state.evaluated.flow.named_parameters())
    for key in seen[0]:
        expected = sum(c * w[key].double() for c, w in zip(coef, seen))
        torch.testing.assert_close(averaged[key].detach().double(), expected, rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(averaged[k], p) for k, p in state.transport.flow.named_parameters())


def _state(cfg, ms, data, seed):
    torch.manual_seed(seed)
    return TrainingState.create(cfg, build_transport(cfg, ms, data[:32], data[32:]))


@pytest.fixture(scope="module")
def parts():
    from molpt_testdata import TINY_TRAIN

    from molpt_tui.config import load_config
    from molpt_tui.physics.systems import system_from_config

    cfg = load_config("quickstart", [*TINY_TRAIN, "training.ema_decay=0.9"])
    plain = load_config("quickstart", TINY_TRAIN)
    ms = system_from_config(cfg)
    rng = np.random.default_rng(0)
    data = torch.tensor(ms.positions[None] + rng.normal(0, 0.003, (64, ms.n_atoms, 3)))
    return cfg, plain, ms, data


def _steps(state, data, n):
    for _ in range(n):
        y, logdet = state.transport(data[:8])
        state.optimizer.zero_grad()
        (y.square().sum() - logdet.sum()).backward()
        state.optimizer.step()
        state.after_step()


def test_a_snapshot_holds_the_average_as_model_and_restores_both(parts):
    cfg, plain, ms, data = parts
    state = _state(cfg, ms, data, 0)
    _steps(state, data, 3)
    snap = state.state_dict()
    assert snap["ema_count"] == 3
    for k, v in state.evaluated.state_dict().items():
        assert torch.equal(snap["model"][k], v)
    for k, v in state.transport.state_dict().items():
        assert torch.equal(snap["train_model"][k], v)

    restored = _state(cfg, ms, data, 1)
    restored.load_state_dict(snap)
    assert restored.ema_count == 3
    assert all(torch.equal(restored.evaluated.state_dict()[k], v) for k, v in snap["model"].items())
    assert all(torch.equal(restored.transport.state_dict()[k], v) for k, v in snap["train_model"].items())

    # a run that no longer averages trains on from the optimizer's weights, not the average
    without = _state(plain, ms, data, 1)
    without.load_state_dict(snap)
    assert without.evaluated is without.transport
    assert all(torch.equal(without.transport.state_dict()[k], v) for k, v in snap["train_model"].items())
    assert "train_model" not in without.state_dict()

    # and a snapshot without an average starts one from its weights
    fresh = _state(cfg, ms, data, 1)
    fresh.load_state_dict(without.state_dict())
    assert fresh.ema_count == 0
    _steps(fresh, data, 1)
    assert all(torch.equal(fresh.evaluated.state_dict()[k], v) for k, v in fresh.transport.state_dict().items())


@pytest.mark.parametrize(("change", "key"), [
    (lambda s: s.pop("ema_count"), "ema_count"),
    (lambda s: s.pop("train_model"), "train_model"),
    (lambda s: s.__setitem__("ema_count", -1), "ema_count"),
    (lambda s: s.__setitem__("ema_count", "many"), "ema_count"),
    (lambda s: s.__setitem__("train_model", {}), "train_model"),
    (lambda s: s["train_model"].__setitem__(next(iter(s["train_model"])), torch.tensor([float("nan")])),
     "train_model."),
])
def test_an_average_that_comes_without_its_partner_or_is_ill_typed_is_refused(parts, change, key):
    cfg, _, ms, data = parts
    state = _state(cfg, ms, data, 0)
    _steps(state, data, 1)
    snap = copy.deepcopy(state.state_dict())
    check_state_dict(snap)
    change(snap)
    with pytest.raises(SchemaError) as err:
        check_state_dict(snap)
    assert err.value.key.startswith(key)


def test_a_run_with_the_average_evaluates_selects_and_saves_it(tiny_config, tmp_path):
    cfg = tiny_config("training.epochs=6", "training.ema_decay=0.8")
    # the training file stands in for the independent run: what matters is that it is evaluated
    finished, sink = _train(cfg, tmp_path, test_path=cfg.data_path)
    assert finished.status == "completed"
    final = load_checkpoint(tmp_path / "molecular_pt_300_450.pt")
    last = load_checkpoint(tmp_path / "last.pt")
    steps = sum(1 for m in sink.of(EpochMetrics) if m.epoch > 0) * cfg.training.steps_per_epoch
    assert last["ema_count"] == steps
    assert any(not torch.equal(last["model"][k], last["train_model"][k]) for k in last["model"])
    assert final["selection"]["weights"] == "moving average (training.ema_decay = 0.8)"
    assert any("moving average of the weights over about 5 steps" in m.text for m in sink.of(Message))

    # the figures on screen are those of the saved weights: the selected epoch's validation KL
    # and the final test acceptance come back from the final model file
    best = next(b for b in sink.of(LogBlock) if b.epoch == final["epoch"])
    test = next(t for t in sink.of(OnTest) if t.label == "final")
    with make_setup(cfg, test_path=cfg.data_path) as setup:
        torch.manual_seed(cfg.training.seed)
        transport = build_transport(cfg, setup.ms, setup.split.cold_train, setup.split.hot_train)
        transport.load_state_dict(final["model"])
        batch = max(64, cfg.training.batch_size * 4)
        assert evaluate(transport, setup, batch).kl_val == best.kl_val
        assert evaluate(transport, setup, batch, setup.test).acc_flow == test.acc_flow
        # last.pt is of the last epoch, past the ramp: its average and its trained weights differ,
        # and the validation figure is the average's
        at_end = next(b for b in sink.of(LogBlock) if b.epoch == last["epoch"])
        transport.load_state_dict(last["model"])
        assert evaluate(transport, setup, batch).kl_val == at_end.kl_val
        transport.load_state_dict(last["train_model"])
        assert evaluate(transport, setup, batch).kl_val != at_end.kl_val


@pytest.mark.parametrize("value", ["1.0", "-0.1", "1.5", "abc"])
def test_an_impossible_decay_is_one_line_naming_the_key(tiny_config, value):
    with pytest.raises(UserError) as err:
        tiny_config(f"training.ema_decay={value}")
    assert "training.ema_decay" in str(err.value) and "\n" not in str(err.value)
