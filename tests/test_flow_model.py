"""Coupling layers, conditioners and FlowModel: exact log-dets (vs full autograd Jacobians),
single-pass inverse, identity at init, circle topology, determinism."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from molpt_tui.flows.base import Composite, Inverse, Transform
from molpt_tui.flows.coupling import CouplingLayer, mask_schedule
from molpt_tui.flows.layout import Layout
from molpt_tui.flows.model import FlowModel
from molpt_tui.flows.splines import wrap_angle

COMBOS = [(c, t) for c in ("transformer", "mlp") for t in ("spline", "affine")]
SMALL = dict(hidden=16, n_heads=2, n_blocks=1, n_bins=6, n_layers=5)
PI32 = torch.tensor(math.pi, dtype=torch.float32).item()


def internal_layout(n_tokens: int = 5) -> Layout:
    """Z-matrix style: atom 0 has a bond, atom 1 bond+angle, the rest bond+angle+torsion."""
    atom, slot, kind = [], [], []
    for t in range(n_tokens):
        for s, k in enumerate(("bond", "angle", "torsion")[: min(3, t + 1)]):
            atom.append(t)
            slot.append(s)
            kind.append(k)
    return Layout(tuple(atom), tuple(slot), tuple(kind), n_tokens)


LAYOUT = internal_layout(5)  # D = 12, 3 torsions


def sample_z(layout: Layout, n: int, dtype=torch.float32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = 2.0 * torch.randn(n, layout.dim, generator=g, dtype=torch.float64)  # reaches the tails
    per = layout.periodic
    z[:, per] = (torch.rand(n, int(per.sum()), generator=g, dtype=torch.float64) * 2 - 1) * math.pi
    z = z.to(dtype)
    z[0, per] = -math.pi  # the cut itself
    z[1, per] = torch.nextafter(torch.tensor(math.pi, dtype=dtype), torch.tensor(0.0, dtype=dtype))
    z[:, per] = wrap_angle(z[:, per])
    return z


@torch.no_grad()
def perturb(module: nn.Module, scale: float, seed: int = 0) -> None:
    """Move every weight (the zero-initialised heads included) away from its init."""
    g = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def circ_aware_diff(a: torch.Tensor, b: torch.Tensor, layout: Layout) -> torch.Tensor:
    d = a - b
    per = layout.periodic
    d[:, per] = wrap_angle(d[:, per])
    return d


def jacobian_logdets(fn, z: torch.Tensor) -> torch.Tensor:
    out = []
    for row in z:
        jac = torch.autograd.functional.jacobian(lambda v: fn(v.unsqueeze(0))[0].squeeze(0), row)
        sign, logabs = torch.linalg.slogdet(jac)
        assert sign != 0
        out.append(logabs)
    return torch.stack(out)


# --------------------------------------------------------------------------- masks


def test_mask_schedule_alternates_atoms_then_kinds_and_covers_every_dim():
    masks = mask_schedule(LAYOUT, 8)
    atom, _ = LAYOUT.index_tensors()
    assert torch.equal(masks[0], atom % 2 == 0)
    assert torch.equal(masks[1], atom % 2 == 1)
    assert torch.equal(masks[2], LAYOUT.periodic)
    assert torch.equal(masks[3], ~LAYOUT.periodic)
    assert all(torch.equal(masks[i], masks[i + 4]) for i in range(4))
    assert all(m.any() and not m.all() for m in masks)
    assert torch.stack(masks[:2]).any(0).all()


def test_mask_schedule_falls_back_when_a_partition_is_degenerate():
    cart = Layout(tuple(i // 3 for i in range(9)), tuple(i % 3 for i in range(9)), ("cart",) * 9, 3)
    masks = mask_schedule(cart, 4)
    assert torch.equal(masks[2], torch.tensor([s == 0 for s in cart.slot_of_dim]))
    one_token = Layout((0, 0, 0), (0, 1, 2), ("bond", "angle", "torsion"), 1)
    masks = mask_schedule(one_token, 4)
    assert torch.equal(masks[0], torch.tensor([True, False, True]))
    assert all(m.any() and not m.all() for m in masks)
    with pytest.raises(ValueError):
        mask_schedule(Layout((0,), (0,), ("bond",), 1), 2)


# --------------------------------------------------------------------------- identity at init


@pytest.mark.parametrize("conditioner,transform", COMBOS)
def test_model_is_exactly_the_identity_at_init_and_can_leave_it(conditioner, transform):
    torch.manual_seed(0)
    model = FlowModel(LAYOUT, conditioner=conditioner, transform=transform, **SMALL)
    z = sample_z(LAYOUT, 64)
    y, ld = model(z)
    assert torch.equal(y, z) and torch.count_nonzero(ld) == 0
    x, ldi = model.inverse(z)
    assert torch.equal(x, z) and torch.count_nonzero(ldi) == 0
    # zero heads must still receive gradient, otherwise training could never leave the identity
    target = torch.randn_like(z)
    (((y - target) ** 2).sum() - ld.sum()).backward()
    last_head = model[-1].conditioner.head
    assert last_head.weight.grad.abs().sum() > 0


# --------------------------------------------------------------------------- log-det vs autograd


@pytest.mark.parametrize("conditioner,transform", COMBOS)
def test_coupling_layer_jacobian_is_triangular_and_logdet_exact(conditioner, transform):
    torch.manual_seed(1)
    mask = mask_schedule(LAYOUT, 4)[0]
    layer = CouplingLayer(
        LAYOUT, mask, conditioner=conditioner, transform=transform, hidden=16, n_heads=2, n_blocks=1, n_bins=6
    ).double()
    perturb(layer, 0.3, seed=1)
    z = sample_z(LAYOUT, 4, torch.float64, seed=1)
    for direction in (layer.forward, layer.inverse):
        _, ld = direction(z)
        for row, ld_row in zip(z, ld):
            jac = torch.autograd.functional.jacobian(lambda v, f=direction: f(v.unsqueeze(0))[0].squeeze(0), row)
            cond = ~mask
            # conditioning dims pass through; the transformed block is elementwise
            torch.testing.assert_close(jac[cond][:, cond], torch.eye(int(cond.sum()), dtype=torch.float64))
            assert torch.count_nonzero(jac[cond][:, mask]) == 0
            block = jac[mask][:, mask]
            assert torch.count_nonzero(block - torch.diag(torch.diagonal(block))) == 0
            torch.testing.assert_close(torch.linalg.slogdet(jac)[1], ld_row, atol=1e-10, rtol=1e-10)
        assert ld.abs().max() > 1e-3  # the perturbed layer is not the identity


@pytest.mark.parametrize("conditioner,transform", COMBOS)
def test_full_model_logdet_matches_autograd_jacobian_both_directions(conditioner, transform):
    torch.manual_seed(2)
    model = FlowModel(LAYOUT, conditioner=conditioner, transform=transform, **SMALL).double()
    perturb(model, 0.1, seed=2)
    z = sample_z(LAYOUT, 3, torch.float64, seed=2)
    y, ld = model(z)
    torch.testing.assert_close(jacobian_logdets(model.forward, z), ld, atol=1e-9, rtol=1e-9)
    x, ldi = model.inverse(y)
    torch.testing.assert_close(jacobian_logdets(model.inverse, y), ldi, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(ldi, -ld, atol=1e-9, rtol=0)
    assert circ_aware_diff(x, z, LAYOUT).abs().max() < 1e-9
    assert ld.abs().min() > 1e-2


# --------------------------------------------------------------------------- float32 behaviour


@pytest.mark.parametrize("conditioner,transform", COMBOS)
def test_float32_round_trip_and_periodic_range(conditioner, transform):
    torch.manual_seed(3)
    model = FlowModel(LAYOUT, conditioner=conditioner, transform=transform, **SMALL)
    perturb(model, 0.05, seed=3)
    z = sample_z(LAYOUT, 256, seed=3)
    with torch.no_grad():
        y, ld = model(z)
        x, ldi = model.inverse(y)
        zi, _ = model.inverse(z)
    assert ld.abs().mean() > 0.05
    assert circ_aware_diff(x, z, LAYOUT).abs().max() < 1e-5
    assert (ld + ldi).abs().max() < 1e-4
    per = LAYOUT.periodic
    for out in (y, x, zi):
        assert torch.isfinite(out).all()
        assert (out[:, per] >= -PI32).all() and (out[:, per] < PI32).all()


@pytest.mark.parametrize("conditioner", ["transformer", "mlp"])
def test_outputs_are_deterministic_and_independent_of_train_eval_mode(conditioner):
    torch.manual_seed(4)
    model = FlowModel(LAYOUT, conditioner=conditioner, **SMALL)
    perturb(model, 0.05, seed=4)
    z = sample_z(LAYOUT, 32, seed=4)
    model.train()
    y1, ld1 = model(z)
    y2, ld2 = model(z)
    i1, li1 = model.inverse(z)
    model.eval()
    with torch.no_grad():
        y3, ld3 = model(z)
        i3, li3 = model.inverse(z)
    assert torch.equal(y1, y2) and torch.equal(ld1, ld2)
    assert torch.equal(y1, y3) and torch.equal(ld1, ld3)
    assert torch.equal(i1, i3) and torch.equal(li1, li3)


@pytest.mark.parametrize("conditioner", ["transformer", "mlp"])
def test_conditioner_never_reads_the_dims_it_transforms(conditioner):
    torch.manual_seed(5)
    mask = mask_schedule(LAYOUT, 4)[2]
    layer = CouplingLayer(LAYOUT, mask, conditioner=conditioner, hidden=16, n_heads=2, n_blocks=1)
    perturb(layer, 0.1, seed=5)
    z = sample_z(LAYOUT, 16, seed=5)
    z2 = z.clone()
    z2[:, mask] = torch.randn(16, int(mask.sum())) * 100.0
    with torch.no_grad():
        assert torch.equal(layer.conditioner(z), layer.conditioner(z2))


def test_state_dict_round_trip_reproduces_the_map():
    torch.manual_seed(6)
    model = FlowModel(LAYOUT, **SMALL)
    perturb(model, 0.05, seed=6)
    clone = FlowModel(LAYOUT, **SMALL)
    clone.load_state_dict(model.state_dict())
    z = sample_z(LAYOUT, 8, seed=6)
    with torch.no_grad():
        assert torch.equal(model(z)[0], clone(z)[0])
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in clone.parameters())


def test_model_rejects_wrong_shape_and_bad_options():
    model = FlowModel(LAYOUT, **SMALL)
    with pytest.raises(ValueError):
        model(torch.zeros(2, LAYOUT.dim + 1))
    with pytest.raises(ValueError):
        FlowModel(LAYOUT, conditioner="rnn")
    with pytest.raises(ValueError):
        FlowModel(LAYOUT, transform="linear")
    with pytest.raises(ValueError):
        FlowModel(LAYOUT, hidden=10, n_heads=4)


# --------------------------------------------------------------------------- composition


class _Scale(Transform):
    """Fixed diagonal scaling of the non-periodic dims: a stand-in for the harmonic map."""

    def __init__(self, layout: Layout, factor: float) -> None:
        super().__init__()
        s = torch.where(layout.periodic, 1.0, factor)
        self.register_buffer("s", s)

    def forward(self, z):
        return z * self.s, torch.log(self.s).sum().expand(z.shape[0])

    def inverse(self, y):
        return y / self.s, -torch.log(self.s).sum().expand(y.shape[0])


def test_composite_composes_maps_logdets_and_inverses():
    torch.manual_seed(7)
    model = FlowModel(LAYOUT, **SMALL).double()
    perturb(model, 0.1, seed=7)
    flow = Composite(_Scale(LAYOUT, 0.7), model, _Scale(LAYOUT, 1.3)).double()
    assert sum(p.numel() for p in flow.parameters()) == sum(p.numel() for p in model.parameters())
    z = sample_z(LAYOUT, 3, torch.float64, seed=7)
    y, ld = flow(z)
    manual = z * flow[0].s
    manual, _ = model(manual)
    torch.testing.assert_close(y, manual * flow[2].s)
    torch.testing.assert_close(jacobian_logdets(flow.forward, z), ld, atol=1e-9, rtol=1e-9)
    x, ldi = flow.inverse(y)
    assert circ_aware_diff(x, z, LAYOUT).abs().max() < 1e-9
    torch.testing.assert_close(ldi, -ld, atol=1e-9, rtol=0)
    # Inverse swaps the directions exactly, and a named Composite runs in the order given
    back = Inverse(flow)
    assert torch.equal(back(y)[0], x) and torch.equal(back.inverse(z)[1], ld)
    named = Composite(first=flow[0], flow=model)
    assert list(dict(named.named_children())) == ["first", "flow"] and named["flow"] is model
    assert torch.equal(named(z)[0], model(z * flow[0].s)[0])
    assert len(Composite(model)) == 1
    empty_y, empty_ld = Composite()(z)
    assert torch.equal(empty_y, z) and torch.count_nonzero(empty_ld) == 0
    with pytest.raises(TypeError):
        Composite(nn.Linear(2, 2))
    with pytest.raises(TypeError):
        Composite(model, flow=model)
