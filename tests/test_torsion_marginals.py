"""The population-matching torsion map: exact inverse and log-det, the hot marginal from the cold one."""
from __future__ import annotations

import math

import torch

from molpt_tui.flows.layout import Layout
from molpt_tui.flows.torsion_marginals import MarginalTorsionMap, total_variation


def layout() -> Layout:
    # one bond, one angle, two torsions
    return Layout(atom_of_dim=(0, 0, 0, 1), slot_of_dim=(0, 1, 2, 2), kind_of_dim=("bond", "angle", "torsion",
                                                                                   "torsion"), n_tokens=2)


def two_state(n: int, cis: float, gen: torch.Generator) -> torch.Tensor:
    """omega-like: trans at pi with a narrow spread, cis at 0 with probability `cis`."""
    state = torch.rand(n, generator=gen) < cis
    centre = torch.where(state, 0.0, math.pi)
    theta = centre + 0.15 * torch.randn(n, generator=gen, dtype=torch.float64)
    return torch.remainder(theta + math.pi, 2 * math.pi) - math.pi


def samples(n: int, cis: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 4, generator=g, dtype=torch.float64)
    z[:, 2] = two_state(n, cis, g)
    z[:, 3] = 0.3 * torch.randn(n, generator=g, dtype=torch.float64)   # the same at both temperatures
    return z


def test_it_picks_the_two_state_torsion_and_carries_the_cold_marginal_onto_the_hot_one():
    cold, hot = samples(40_000, 0.002, 0), samples(40_000, 0.15, 1)
    m = MarginalTorsionMap(layout(), cold, hot, min_mass=0.05)
    assert m.dims.tolist() == [2]                     # not the bond, the angle, or the unchanged torsion
    mapped, _ = m(cold)
    assert torch.equal(mapped[:, [0, 1, 3]], cold[:, [0, 1, 3]])
    assert float(total_variation(cold[:, 2:3], hot[:, 2:3])) > 0.1
    assert float(total_variation(mapped[:, 2:3], hot[:, 2:3])) < 0.03
    cis_fraction = float((mapped[:, 2].abs() < math.pi / 2).double().mean())
    assert abs(cis_fraction - 0.15) < 0.01


def test_inverse_and_log_det_are_exact():
    cold, hot = samples(5000, 0.002, 2), samples(5000, 0.15, 3)
    m = MarginalTorsionMap(layout(), cold, hot, min_mass=0.05)
    z = samples(300, 0.1, 4)
    y, ld = m(z)
    back, ld_inv = m.inverse(y)
    d = torch.remainder(back - z + math.pi, 2 * math.pi) - math.pi
    assert float(d.abs().max()) < 1e-9
    assert torch.allclose(ld, -ld_inv, atol=1e-9)
    # against a finite difference of the one mapped dim (the others are the identity)
    h = 1e-6
    zp = z.clone()
    zp[:, 2] += h
    yp, _ = m(zp)
    slope = (torch.remainder(yp[:, 2] - y[:, 2] + math.pi, 2 * math.pi) - math.pi) / h
    assert torch.allclose(torch.log(slope), ld, atol=1e-4)
    # bounded by the density floor
    assert float(ld.abs().max()) < 10.0


def test_nothing_to_match_is_the_identity_and_an_empty_shell_loads():
    cold = samples(2000, 0.1, 5)
    m = MarginalTorsionMap(layout(), cold, samples(2000, 0.1, 6), min_mass=0.2)
    assert m.n_dims == 0
    y, ld = m(cold)
    assert torch.equal(y, cold) and torch.equal(ld, torch.zeros(2000, dtype=torch.float64))
    full = MarginalTorsionMap(layout(), samples(4000, 0.0, 7), samples(4000, 0.3, 8), min_mass=0.05)
    shell = MarginalTorsionMap(layout(), None, None, min_mass=0.05, n_dims=full.n_dims)
    shell.load_state_dict(full.state_dict())
    z = samples(50, 0.2, 9)
    assert torch.equal(shell(z)[0], full(z)[0])


def test_the_transport_carries_the_map_exactly_when_asked(tiny_config):
    from molpt_tui.physics.data import load_data
    from molpt_tui.physics.systems import system_from_config
    from molpt_tui.training.setup import build_transport, split_data

    cfg = tiny_config("model.two_state_min_mass=0.02")
    ms = system_from_config(cfg)
    split = split_data(cfg, load_data(cfg.data_path, ms))
    plain = build_transport(tiny_config(), ms, split.cold_train, split.hot_train)
    assert type(plain.harmonic).__name__ == "HarmonicTemperatureMap"    # off by default: the keys of old runs
    tried = build_transport(cfg, ms, split.cold_train, split.hot_train)
    # 12 ps of tiny data: a rotor the cold replica never left one well of counts as two-state here
    marginals = tried.harmonic["marginals"]
    assert marginals.n_dims >= 1
    x = split.cold_train[:16]
    with torch.no_grad():
        y, ld = tried(x)
        back, ld_inv = tried.inverse(y)
    assert float((back - tried.canonical(x)).abs().max()) < 1e-4
    assert torch.allclose(ld, -ld_inv, atol=1e-3)


def test_a_checkpoint_from_before_a_new_model_key_still_resumes(tiny_config):
    from pathlib import Path

    from molpt_tui.physics.systems import system_from_config
    from molpt_tui.training.checkpoint import check_compatible

    cfg = tiny_config()
    ms = system_from_config(cfg)
    saved = cfg.to_dict()
    del saved["model"]["two_state_min_mass"]
    ckpt = {"system": {"atom_names": list(ms.atom_names), "pdb": "x.pdb", "n_atoms": ms.n_atoms}, "config": saved}
    check_compatible(ckpt, Path("last.pt"), ms, cfg)          # the default is what the old run had
