"""training.compile_flow: training steps run the spline kernels through torch.compile; every
evaluation runs the eager code, and a compiler that fails costs the run nothing."""
from __future__ import annotations

import os

import pytest
import torch
from test_trainer import _train

from molpt_tui.app import resources
from molpt_tui.errors import UserError
from molpt_tui.flows import splines
from molpt_tui.flows.coupling import use_training_kernels
from molpt_tui.flows.layout import Layout
from molpt_tui.flows.model import FlowModel
from molpt_tui.flows.spline_kernels import EAGER, SplineKernels, compiled_kernels
from molpt_tui.physics.torch_energy import compiler_available
from molpt_tui.training import trainer as trainer_module
from molpt_tui.training.events import EpochMetrics, LogBlock, Message
from molpt_tui.training.events import TestEvaluation as OnTest
from molpt_tui.training.setup import check_flow_compile


class Recording:
    """Eager spline functions that count their calls, standing in for compiled ones."""

    def __init__(self, fail: bool = False) -> None:
        self.calls = 0
        self.calls_without_grad = 0
        self.fail = fail

    def wrap(self, fn):
        def kernel(*args, **kwargs):
            self.calls += 1
            self.calls_without_grad += not torch.is_grad_enabled()
            if self.fail:
                raise RuntimeError("the C++ compiler exited with status 1\nsecond line")
            return fn(*args, **kwargs)
        return kernel

    def kernels(self) -> SplineKernels:
        return SplineKernels(self.wrap(splines.interval_rq_spline), self.wrap(splines.circular_rq_spline))


def _layout() -> Layout:
    kinds = ("bond", "angle", "torsion") * 4
    return Layout(tuple(i // 3 for i in range(12)), tuple(i % 3 for i in range(12)), kinds, 4)


def _flow(seed: int = 0) -> FlowModel:
    torch.manual_seed(seed)
    flow = FlowModel(_layout(), conditioner="mlp", n_layers=4, hidden=16, n_bins=5)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.05 * torch.randn_like(p))  # away from the identity, where every spline is trivial
    return flow


def _shifted(fn):
    """A kernel whose output differs from the eager one, so which of them ran shows in the result."""
    def kernel(*args, **kwargs):
        y, ld = fn(*args, **kwargs)
        return y + 0.25, ld
    return kernel


def test_the_training_kernels_serve_only_calls_that_record_gradients():
    flow, rec = _flow(), Recording()
    z = torch.randn(8, 12)
    with torch.no_grad():
        eager_y, eager_ld = flow(z)
    assert use_training_kernels(flow, rec.kernels()) == 4
    with torch.no_grad():
        flow(z)
        flow.inverse(z)
    assert rec.calls == 0
    flow(z)
    assert rec.calls > 0 and rec.calls_without_grad == 0
    # kernels that answer differently: no_grad calls stay the eager flow bit for bit, grad calls do not
    shifted = SplineKernels(_shifted(splines.interval_rq_spline), _shifted(splines.circular_rq_spline))
    use_training_kernels(flow, shifted)
    with torch.no_grad():
        torch.testing.assert_close(flow(z), (eager_y, eager_ld), rtol=0, atol=0)
    assert not torch.allclose(flow(z)[0], eager_y)
    use_training_kernels(flow, EAGER)
    torch.testing.assert_close(flow(z)[0].detach(), eager_y, rtol=0, atol=0)


def test_affine_layers_have_nothing_to_compile():
    flow = FlowModel(_layout(), conditioner="mlp", transform="affine", n_layers=2, hidden=8)
    assert use_training_kernels(flow, Recording().kernels()) == 0


def _run(cfg, run_dir):
    run_dir.mkdir()
    return _train(cfg, run_dir)


def _figures(sink):
    blocks = [(b.epoch, b.loss, b.acc_flow, b.kl_val) for b in sink.of(LogBlock)]
    epochs = [(m.epoch, m.loss) for m in sink.of(EpochMetrics)]
    tests = [(t.label, t.acc_flow) for t in sink.of(OnTest)]
    return blocks, epochs, tests


def test_a_compiled_run_trains_on_the_training_kernels_and_evaluates_eagerly(tiny_config, tmp_path, monkeypatch):
    cfg = tiny_config("training.epochs=3")
    _, plain = _run(cfg, tmp_path / "plain")
    rec = Recording()
    monkeypatch.setattr(trainer_module, "compiled_kernels", rec.kernels)
    finished, sink = _run(tiny_config("training.epochs=3", "training.compile_flow=true"), tmp_path / "compiled")
    assert finished.status == "completed"
    # every step's splines went through them, and no evaluation did
    steps = 3 * cfg.training.steps_per_epoch + 1  # + the warm-up batch
    per_step = 2 * cfg.model.n_layers * 2        # both directions, interval and circular per layer
    assert rec.calls == steps * per_step and rec.calls_without_grad == 0
    # the warm-up batch leaves no trace: the same losses, validation and test figures as eager
    assert _figures(sink) == _figures(plain)
    texts = [m.text for m in sink.of(Message)]
    assert any("compiling the flow's spline kernels" in t for t in texts)
    assert any(t.startswith("flow spline kernels compiled in") for t in texts)


def test_a_compiler_that_fails_leaves_the_run_eager_and_says_so(tiny_config, tmp_path, monkeypatch):
    cfg = tiny_config("training.epochs=2")
    _, plain = _run(cfg, tmp_path / "plain")
    rec = Recording(fail=True)
    monkeypatch.setattr(trainer_module, "compiled_kernels", rec.kernels)
    finished, sink = _run(tiny_config("training.epochs=2", "training.compile_flow=true"), tmp_path / "failed")
    assert finished.status == "completed"
    assert rec.calls == 1  # the warm-up's first spline, then never again
    warnings = [m.text for m in sink.of(Message) if m.level == "warning" and "torch.compile" in m.text]
    assert len(warnings) == 1
    assert "RuntimeError: the C++ compiler exited with status 1" in warnings[0] and "second line" not in warnings[0]
    assert _figures(sink) == _figures(plain)


def test_compile_flow_is_refused_before_anything_runs_when_it_cannot_work(tiny_config, monkeypatch):
    cpu = torch.device("cpu")
    check_flow_compile(tiny_config("model.transform=affine"), cpu)  # off: nothing to check
    with pytest.raises(UserError) as err:
        check_flow_compile(tiny_config("model.transform=affine", "training.compile_flow=true"), cpu)
    assert "training.compile_flow" in str(err.value) and "affine" in str(err.value) and "\n" not in str(err.value)
    import molpt_tui.physics.torch_energy as torch_energy

    monkeypatch.setattr(torch_energy, "compiler_available", lambda device: (False, "no C++ compiler on PATH"))
    with pytest.raises(UserError) as err:
        check_flow_compile(tiny_config("training.compile_flow=true"), cpu)
    assert "training.compile_flow = true but no C++ compiler on PATH" in str(err.value)


def test_compiles_use_the_threads_of_the_plan(monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_COMPILE_THREADS", raising=False)
    monkeypatch.delenv("MOLPT_TUI_COMPILE_THREADS", raising=False)
    plan = resources.plan_threads(resources.cpu_budget(3), "torch")
    resources.apply_threads(plan)
    assert os.environ["TORCHINDUCTOR_COMPILE_THREADS"] == str(plan.torch_threads)
    inductor = pytest.importorskip("torch._inductor.config")
    assert inductor.compile_threads == plan.torch_threads
    # a second plan in the same process (the engine is known) resizes what the first one set
    resources.apply_threads(resources.plan_threads(resources.cpu_budget(1), "torch"))
    assert os.environ["TORCHINDUCTOR_COMPILE_THREADS"] == "1" and inductor.compile_threads == 1


def test_a_child_sizes_the_compile_pool_to_its_own_plan(monkeypatch):
    # what a trainer child or a data-parallel rank inherits from the process that started it
    monkeypatch.setenv("TORCHINDUCTOR_COMPILE_THREADS", "4")
    monkeypatch.setenv("MOLPT_TUI_COMPILE_THREADS", "4")
    resources.apply_threads(resources.plan_threads(resources.cpu_budget(2), "torch"))
    assert os.environ["TORCHINDUCTOR_COMPILE_THREADS"] == "2"


@pytest.mark.parametrize("ours", [None, "4"])
def test_a_users_compile_threads_are_kept(monkeypatch, ours):
    monkeypatch.setenv("TORCHINDUCTOR_COMPILE_THREADS", "7")
    if ours is None:
        monkeypatch.delenv("MOLPT_TUI_COMPILE_THREADS", raising=False)
    else:  # the user changed it after a run of ours had set it
        monkeypatch.setenv("MOLPT_TUI_COMPILE_THREADS", ours)
    resources.apply_threads(resources.plan_threads(resources.cpu_budget(2), "torch"))
    assert os.environ["TORCHINDUCTOR_COMPILE_THREADS"] == "7"


@pytest.mark.skipif(not compiler_available("cpu")[0], reason="no C++ compiler for torch.compile")
def test_compiled_splines_agree_with_the_eager_ones_in_value_and_gradient():
    # one direction of each spline: every compile costs tens of seconds on a small CPU
    kernels = compiled_kernels()
    torch.manual_seed(1)
    x = torch.cat([torch.randn(6, 3) * 2, torch.tensor([[7.0, -6.0, 0.5]])])  # tails included
    raw = [torch.randn(7, 3, 6, requires_grad=True) for _ in range(3)]
    shift = torch.randn(7, 3, requires_grad=True)
    angles = (torch.rand(7, 3) * 2 - 1) * torch.pi
    cases = [
        (splines.interval_rq_spline, kernels.interval, (x, raw[0], raw[1], raw[2][..., :5]), dict(tail_bound=5.0)),
        (splines.circular_rq_spline, kernels.circular, (angles, *raw, shift), dict(inverse=True)),
    ]
    for eager, compiled, args, kw in cases:
        leaves = [a for a in args if a.requires_grad]
        y0, ld0 = eager(*args, **kw)
        g0 = torch.autograd.grad((y0 * 1.3).sum() + ld0.sum(), leaves)
        y1, ld1 = compiled(*args, **kw)
        g1 = torch.autograd.grad((y1 * 1.3).sum() + ld1.sum(), leaves)
        torch.testing.assert_close(y1, y0, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ld1, ld0, rtol=1e-5, atol=1e-5)
        for a, b in zip(g1, g0):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
