"""The Transform contract, checked the same way for every transform (after nflows' shared
transform test case and zuko's log-det-versus-autograd tests):

* round trip: inverse(forward(x)) returns x, within ROUND_TRIP_TOL (float64 throughout; maps
  that start from Cartesian coordinates return x in their canonical frame);
* the log-dets of the two directions are opposite at corresponding points (LOGDET_TOL);
* each direction's log-det equals log|det| of the autograd Jacobian (LOGDET_TOL). For maps
  that leave or enter Cartesian space (representations, Transport) the Jacobian is taken on
  the reduced coordinates: the map is composed with a rigid motion (translation, ZYZ Euler
  angles) to make it square, and the Haar density sin(beta) is divided out, as in
  test_internal_coords / test_cartesian_repr.

Learned weights start at zero (every flow is the identity at init), which would pass all of
this trivially, so each case perturbs its parameters first and ``test_case_is_not_trivial``
checks that it really moves points.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from molpt_testdata import rot_zyz
from torch import Tensor, nn

from molpt_tui.flows.base import Composite, InParameterDtype, Inverse, Transform
from molpt_tui.flows.cartesian import AlignedCartesian, align_to_frame
from molpt_tui.flows.coupling import CouplingLayer, mask_schedule
from molpt_tui.flows.harmonic import HarmonicTemperatureMap
from molpt_tui.flows.internal import ICRepresentation, wrap_angle
from molpt_tui.flows.layout import Layout
from molpt_tui.flows.model import FlowModel
from molpt_tui.flows.splines import circular_rq_spline, interval_rq_spline
from molpt_tui.flows.transport import Transport

ROUND_TRIP_TOL = 1e-9
MOLECULE_ROUND_TRIP_TOL = 1e-8  # NeRF placement and the alignment add a few ulps per atom
LOGDET_TOL = 1e-8
F64 = torch.float64
SMALL = dict(hidden=16, n_heads=2, n_blocks=1, n_bins=6)
EULER0 = torch.tensor([0.7, 1.1, -2.3], dtype=F64)
SHIFT0 = torch.tensor([0.3, -0.2, 0.5], dtype=F64)


# ----------------------------------------------------------------------------- helpers


def internal_layout(n_tokens: int = 5) -> Layout:
    """Z-matrix style: token 0 has a bond, token 1 bond+angle, the rest bond+angle+torsion."""
    atom, slot, kind = [], [], []
    for t in range(n_tokens):
        for s, k in enumerate(("bond", "angle", "torsion")[: min(3, t + 1)]):
            atom.append(t)
            slot.append(s)
            kind.append(k)
    return Layout(tuple(atom), tuple(slot), tuple(kind), n_tokens)


LAYOUT = internal_layout()  # D = 12, 3 torsions


def sample_z(layout: Layout, n: int, seed: int, narrow_torsions: bool = False) -> Tensor:
    """Linear dims ~ 2 N(0, 1) (reaching the spline tails), torsions uniform on the circle, or
    concentrated near 1 rad (so a harmonic map fitted on them has narrow torsions)."""
    g = torch.Generator().manual_seed(seed)
    z = 2.0 * torch.randn(n, layout.dim, generator=g, dtype=F64)
    per = layout.periodic
    k = int(per.sum())
    if narrow_torsions:
        z[:, per] = 1.0 + 0.2 * torch.randn(n, k, generator=g, dtype=F64)
    else:
        z[:, per] = (torch.rand(n, k, generator=g, dtype=F64) * 2 - 1) * math.pi
    return z


@torch.no_grad()
def perturb(module: nn.Module, scale: float, seed: int) -> None:
    """Move every weight (the zero-initialised heads included) away from its init."""
    g = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def latent_distance(layout: Layout) -> Callable[[Tensor, Tensor], Tensor]:
    per = layout.periodic

    def dist(a: Tensor, b: Tensor) -> Tensor:
        d = a - b
        d[:, per] = wrap_angle(d[:, per])
        return d.abs().amax(dim=1)

    return dist


def cartesian_distance(a: Tensor, b: Tensor) -> Tensor:
    return (a - b).abs().amax(dim=(1, 2))


def jacobian_logdet(fn: Callable[[Tensor], tuple[Tensor, Tensor]], x: Tensor) -> Tensor:
    """log|det d fn(x)/dx| per sample, for a map between spaces of equal dimension."""
    out = []
    for row in x:
        jac = torch.autograd.functional.jacobian(lambda v: fn(v[None])[0].reshape(-1), row)
        sign, logabs = torch.linalg.slogdet(jac)
        assert sign != 0
        out.append(logabs)
    return torch.stack(out)


def placement_logdet(place: Callable[[Tensor], Tensor], z: Tensor) -> Tensor:
    """log|det d x_reduced / dz| per sample for ``place``: z [1, D] -> x [1, N, 3], D = 3N - 6.

    A rigid motion after ``place`` makes the map (translation, Euler angles, z) -> x square;
    dividing out the Haar density sin(beta) leaves the reduced Jacobian.
    """
    out = []
    for row in z:

        def world(p: Tensor) -> Tensor:
            x = place(p[6:][None])[0]
            return (x @ rot_zyz(*p[3:6]).T + p[:3]).reshape(-1)

        jac = torch.autograd.functional.jacobian(world, torch.cat([SHIFT0, EULER0, row]))
        assert jac.shape[0] == jac.shape[1]
        sign, logabs = torch.linalg.slogdet(jac)
        assert sign != 0
        out.append(logabs - torch.log(torch.sin(EULER0[1])))
    return torch.stack(out)


@dataclass
class Case:
    transform: Transform
    x: Tensor                                   # a small float64 batch of inputs
    distance: Callable[[Tensor, Tensor], Tensor]  # per-sample distance in the input space
    reference_forward: Callable[[Tensor], Tensor]  # autograd log-det of forward at x
    reference_inverse: Callable[[Tensor], Tensor]  # autograd log-det of inverse at y
    canonical: Callable[[Tensor], Tensor] = lambda x: x  # what inverse(forward(x)) must return
    round_trip_tol: float = ROUND_TRIP_TOL


def same_dim_case(t: Transform, x: Tensor, layout: Layout) -> Case:
    return Case(t, x, latent_distance(layout), lambda x: jacobian_logdet(t, x), lambda y: jacobian_logdet(t.inverse, y))


class ElementwiseSpline(Transform):
    """One RQ spline per dim with fixed random parameters: the spline maths on its own."""

    def __init__(self, dim: int, n_bins: int, circular: bool, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        n_par = 3 * n_bins + 1 if circular else 3 * n_bins - 1
        self.raw = nn.Parameter(0.8 * torch.randn(dim, n_par, generator=g, dtype=F64))
        self.k = n_bins
        self.circular = circular

    def _spline(self, x: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        p = self.raw.expand(x.shape[0], -1, -1)
        k = self.k
        w, h = p[..., :k], p[..., k : 2 * k]
        if self.circular:
            y, ld = circular_rq_spline(x, w, h, p[..., 2 * k : 3 * k], p[..., 3 * k], inverse=inverse)
        else:
            y, ld = interval_rq_spline(x, w, h, p[..., 2 * k :], inverse=inverse, tail_bound=3.0)
        return y, ld.sum(-1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._spline(x, inverse=False)

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return self._spline(y, inverse=True)


# ----------------------------------------------------------------------------- the cases


def _coupling(conditioner: str, transform: str) -> Case:
    torch.manual_seed(1)
    # mask 0 transforms whole atoms: bonds and angles (interval spline / affine) and torsions
    # (circular spline / rotation) in the same layer
    layer = CouplingLayer(LAYOUT, mask_schedule(LAYOUT, 1)[0], conditioner=conditioner, transform=transform,
                          **SMALL).double()
    perturb(layer, 0.3, seed=1)
    return same_dim_case(layer, sample_z(LAYOUT, 3, seed=1), LAYOUT)


def _spline(circular: bool) -> Case:
    d = 5
    layout = Layout(tuple(range(d)), (0,) * d, ("torsion" if circular else "bond",) * d, d)
    t = ElementwiseSpline(d, n_bins=6, circular=circular, seed=2)
    return same_dim_case(t, sample_z(layout, 3, seed=2), layout)


HARMONIC_KINDS = ("bond", "angle", "cart", "torsion", "torsion", "torsion")


def _harmonic() -> Case:
    d = len(HARMONIC_KINDS)
    layout = Layout(tuple(range(d)), (0,) * d, HARMONIC_KINDS, d)
    cold = sample_z(layout, 4000, seed=3, narrow_torsions=True)
    cold[:, 5] = sample_z(layout, 4000, seed=4)[:, 5]  # one wide torsion, left alone by the map
    t = HarmonicTemperatureMap(layout, cold, 300.0, 700.0)
    assert t.narrow.tolist() == [False, False, False, True, True, False]
    # torsions spread over the whole circle reach both the scaled window and the squeezed arc
    return same_dim_case(t, sample_z(layout, 4, seed=5), layout)


def _flow_model() -> Case:
    torch.manual_seed(6)
    model = FlowModel(LAYOUT, conditioner="transformer", transform="spline", n_layers=4, **SMALL).double()
    perturb(model, 0.1, seed=6)
    return same_dim_case(model, sample_z(LAYOUT, 3, seed=6), LAYOUT)


def _composite() -> Case:
    torch.manual_seed(7)
    harmonic = HarmonicTemperatureMap(LAYOUT, sample_z(LAYOUT, 2000, seed=7, narrow_torsions=True), 300.0, 500.0)
    model = FlowModel(LAYOUT, conditioner="mlp", transform="affine", n_layers=3, **SMALL).double()
    layer = CouplingLayer(LAYOUT, mask_schedule(LAYOUT, 3)[2], conditioner="mlp", **SMALL).double()
    perturb(model, 0.1, seed=7)
    perturb(layer, 0.3, seed=8)
    return same_dim_case(Composite(harmonic, model, Inverse(layer)), sample_z(LAYOUT, 3, seed=7), LAYOUT)


def _inverse() -> Case:
    torch.manual_seed(9)
    model = FlowModel(LAYOUT, conditioner="mlp", transform="spline", n_layers=3, **SMALL).double()
    perturb(model, 0.1, seed=9)
    return same_dim_case(Inverse(model), sample_z(LAYOUT, 3, seed=9), LAYOUT)


def _in_parameter_dtype() -> Case:
    torch.manual_seed(10)
    layer = CouplingLayer(LAYOUT, mask_schedule(LAYOUT, 2)[1], conditioner="transformer", **SMALL).double()
    perturb(layer, 0.3, seed=10)
    return same_dim_case(InParameterDtype(layer), sample_z(LAYOUT, 3, seed=10), LAYOUT)


def molecule_samples(ms: Any, n: int, seed: int) -> Tensor:
    """Thermal-looking alanine dipeptide configurations, each moved by its own rigid motion."""
    g = torch.Generator().manual_seed(seed)
    x0 = torch.as_tensor(ms.positions, dtype=F64)
    xs = x0[None] + 0.01 * torch.randn(n, *x0.shape, generator=g, dtype=F64)
    rots = torch.stack([rot_zyz(*(torch.rand(3, generator=g, dtype=F64) * 3)) for _ in range(n)])
    return xs @ rots.transpose(1, 2) + torch.randn(n, 1, 3, generator=g, dtype=F64)


def _representation(ms: Any, kind: str) -> ICRepresentation | AlignedCartesian:
    rep_cls = ICRepresentation if kind == "internal" else AlignedCartesian
    rep = rep_cls.from_topology(ms.n_atoms, ms.bonds, ms.elements).double()
    return rep.fit(molecule_samples(ms, 64, seed=11))


def _frame(rep: ICRepresentation | AlignedCartesian) -> tuple[int, int, int]:
    return rep.zmatrix.roots if isinstance(rep, ICRepresentation) else rep.refs


def _rep_case(ms: Any, kind: str) -> Case:
    rep = _representation(ms, kind)

    def place(z: Tensor) -> Tensor:
        return rep.inverse(z)[0]

    return Case(
        rep, molecule_samples(ms, 2, seed=12), cartesian_distance,
        reference_forward=lambda x: -placement_logdet(place, rep(x)[0]),
        reference_inverse=lambda z: placement_logdet(place, z),
        canonical=lambda x: align_to_frame(x, *_frame(rep)),
        round_trip_tol=MOLECULE_ROUND_TRIP_TOL,
    )


def _inverse_rep_case(ms: Any) -> Case:
    rep = _representation(ms, "internal")

    def place(z: Tensor) -> Tensor:
        return rep.inverse(z)[0]

    z = rep(molecule_samples(ms, 2, seed=13))[0]
    return Case(
        Inverse(rep), z, latent_distance(rep.layout),
        reference_forward=lambda z: placement_logdet(place, z),
        reference_inverse=lambda x: -placement_logdet(place, rep(x)[0]),
        round_trip_tol=MOLECULE_ROUND_TRIP_TOL,
    )


def build_transport(ms: Any, kind: str, harmonic: bool, seed: int) -> Transport:
    """As the trainer builds it, but all in float64 (the Jacobian checks need it)."""
    torch.manual_seed(seed)
    rep = _representation(ms, kind)
    h = None
    if harmonic:
        with torch.no_grad():
            z_cold = rep(molecule_samples(ms, 64, seed=seed))[0]
        h = HarmonicTemperatureMap(rep.layout, z_cold, 300.0, 600.0)
    conditioner, transform = ("transformer", "spline") if kind == "internal" else ("mlp", "affine")
    flow = FlowModel(rep.layout, conditioner=conditioner, transform=transform, n_layers=4, **SMALL).double()
    perturb(flow, 0.05, seed=seed)
    return Transport(rep, h, flow)


def _transport_case(ms: Any, kind: str, harmonic: bool) -> Case:
    t = build_transport(ms, kind, harmonic, seed=14)
    rep = t.representation

    def reduced(direction: Callable[[Tensor], tuple[Tensor, Tensor]]) -> Callable[[Tensor], Tensor]:
        # T maps the reduced coordinates onto themselves; through the chart R^-1,
        # log|det J_T(x)| = log|det d(T o R^-1)/dz| - log|det d(R^-1)/dz| at z = R(x)
        def ref(x: Tensor) -> Tensor:
            z = rep(x)[0]
            return placement_logdet(lambda zz: direction(rep.inverse(zz)[0])[0], z) - placement_logdet(
                lambda zz: rep.inverse(zz)[0], z
            )

        return ref

    return Case(
        t, molecule_samples(ms, 2, seed=15), cartesian_distance,
        reference_forward=reduced(t), reference_inverse=reduced(t.inverse),
        canonical=t.canonical, round_trip_tol=MOLECULE_ROUND_TRIP_TOL,
    )


LATENT_CASES: dict[str, Callable[[], Case]] = {
    "coupling-mlp-spline": lambda: _coupling("mlp", "spline"),
    "coupling-mlp-affine": lambda: _coupling("mlp", "affine"),
    "coupling-transformer-spline": lambda: _coupling("transformer", "spline"),
    "coupling-transformer-affine": lambda: _coupling("transformer", "affine"),
    "interval-rq-spline": lambda: _spline(circular=False),
    "circular-rq-spline": lambda: _spline(circular=True),
    "harmonic-map": _harmonic,
    "flow-model": _flow_model,
    "composite": _composite,
    "inverse": _inverse,
    "in-parameter-dtype": _in_parameter_dtype,
}
MOLECULE_CASES: dict[str, Callable[[Any], Case]] = {
    "internal-coordinates": lambda ms: _rep_case(ms, "internal"),
    "aligned-cartesian": lambda ms: _rep_case(ms, "cartesian"),
    "inverse-internal-coordinates": _inverse_rep_case,
    "transport-internal-harmonic": lambda ms: _transport_case(ms, "internal", harmonic=True),
    "transport-cartesian-no-harmonic": lambda ms: _transport_case(ms, "cartesian", harmonic=False),
}


@pytest.fixture(scope="module", params=[*LATENT_CASES, *MOLECULE_CASES])
def case(request: pytest.FixtureRequest) -> Case:
    name = request.param
    if name in LATENT_CASES:
        return LATENT_CASES[name]()
    return MOLECULE_CASES[name](request.getfixturevalue("ala2_system"))


# ----------------------------------------------------------------------------- the contract


def test_inverse_undoes_forward(case: Case) -> None:
    y, ld = case.transform(case.x)
    back, ld_back = case.transform.inverse(y)
    assert ld.shape == ld_back.shape == (case.x.shape[0],)
    assert case.distance(back, case.canonical(case.x)).max().item() < case.round_trip_tol


def test_logdets_of_the_two_directions_are_opposite(case: Case) -> None:
    y, ld = case.transform(case.x)
    _, ld_inv = case.transform.inverse(y)
    torch.testing.assert_close(ld_inv, -ld, atol=LOGDET_TOL, rtol=0)


def test_forward_logdet_matches_autograd_jacobian(case: Case) -> None:
    _, ld = case.transform(case.x)
    torch.testing.assert_close(ld, case.reference_forward(case.x), atol=LOGDET_TOL, rtol=0)


def test_inverse_logdet_matches_autograd_jacobian(case: Case) -> None:
    y, _ = case.transform(case.x)
    _, ld_inv = case.transform.inverse(y)
    torch.testing.assert_close(ld_inv, case.reference_inverse(y), atol=LOGDET_TOL, rtol=0)


def test_case_is_not_trivial(case: Case) -> None:
    """Each case moves its points and changes volume, so the checks above have teeth."""
    y, ld = case.transform(case.x)
    assert ld.abs().max().item() > 1e-2
    if y.shape == case.x.shape:
        assert case.distance(y, case.canonical(case.x)).min().item() > 1e-3


# ----------------------------------------------------------------------------- Transport itself


def test_transport_is_the_composite_of_its_pieces_bit_for_bit(ala2_system: Any) -> None:
    t = build_transport(ala2_system, "internal", harmonic=True, seed=16)
    chain = Composite(t.representation, t.latent, Inverse(t.representation))
    x = molecule_samples(ala2_system, 4, seed=17)
    for got, want in ((t(x), chain(x)), (t.inverse(x), chain.inverse(x))):
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_transport_runs_harmonic_map_and_flow_in_the_flow_dtype(ala2_system: Any) -> None:
    """float64 representation, float32 harmonic map and flow, as the trainer builds it."""
    t = build_transport(ala2_system, "internal", harmonic=True, seed=18)
    t.flow.float()
    rep, h, flow = t.representation, t.harmonic, t.flow
    assert h is not None and t.latent.dtype == torch.float32
    x = molecule_samples(ala2_system, 8, seed=19)
    y, ld = t(x)
    assert y.dtype == ld.dtype == F64
    z, ld_r = rep(x)
    zh, ld_h = h(z.float())
    zl, ld_l = flow(zh)
    y_ref, ld_ri = rep.inverse(zl.double())
    assert torch.equal(y, y_ref) and torch.equal(ld, ld_r + (ld_h + ld_l).double() + ld_ri)
    back, ld_back = t.inverse(y)
    z, ld_r = rep(y)
    zl, ld_l = flow.inverse(z.float())
    zh, ld_h = h.inverse(zl)
    x_ref, ld_ri = rep.inverse(zh.double())
    assert torch.equal(back, x_ref) and torch.equal(ld_back, ld_r + (ld_h + ld_l).double() + ld_ri)
    # float32 in the middle costs accuracy, not correctness
    assert cartesian_distance(back, t.canonical(x)).max().item() < 1e-4
    assert (ld + ld_back).abs().max().item() < 1e-3


def test_transport_pieces_and_state_dict(ala2_system: Any) -> None:
    t = build_transport(ala2_system, "internal", harmonic=True, seed=20)
    keys = set(t.state_dict())
    assert {k.split(".")[0] for k in keys} == {"representation", "latent"}
    assert any(k.startswith("latent.transform.harmonic.") for k in keys)
    assert any(k.startswith("latent.transform.flow.") for k in keys)
    # the representation is stored once, not once per direction
    assert sum(k.endswith("z_mean") for k in keys) == 1
    assert {id(p) for p in t.parameters()} == {id(p) for p in t.flow.parameters()}

    fresh = build_transport(ala2_system, "internal", harmonic=True, seed=21)
    x = molecule_samples(ala2_system, 3, seed=22)
    assert not torch.equal(fresh(x)[0], t(x)[0])
    fresh.load_state_dict(t.state_dict())
    assert torch.equal(fresh(x)[0], t(x)[0]) and torch.equal(fresh.inverse(x)[1], t.inverse(x)[1])

    no_harmonic = build_transport(ala2_system, "cartesian", harmonic=False, seed=23)
    assert no_harmonic.harmonic is None
    assert not any("harmonic" in k for k in no_harmonic.state_dict())
