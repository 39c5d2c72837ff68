"""Flow-enhanced parallel tempering (`molpt-tui pt`).

- Known answer: a particle in a tilted double well (x) and a harmonic trap (y, z), whose exact
  distributions at both temperatures are integrals, exchanged through a deliberately imperfect
  map with an x-dependent Jacobian. The cold replica must sample the exact cold distribution,
  and the same check must fail when the log-det is dropped or the velocities travel with the
  configurations instead of being redrawn.
- The trained map: `pt` on a tiny trained run reproduces training's held-out acceptance exactly
  with the loaded map, and its sampled acceptance agrees with it within the statistical error.
- The run directory: signals, a checkpoint request through the control channel, resume; bad
  input refused before anything is written.
"""
from __future__ import annotations

import json
import math
import signal

import numpy as np
import pytest
import torch
from molpt_testdata import TINY_DATA, TINY_TRAIN

from molpt_tui.physics.flow_pt import RoundTrips, maxwell_boltzmann
from molpt_tui.physics.units import KB_KJ_PER_MOL_K, beta
from molpt_tui.training.events import (
    CheckpointSaved,
    Finished,
    LogBlock,
    PTProgress,
    PTStarted,
    RequestAcknowledged,
)
from molpt_tui.training.metrics_log import read_events
from molpt_tui.training.pt import FlowSwapSampler, LadderSampler, MDSpec, batch_means

# --- the known-answer system ------------------------------------------------------------------

A_NM, BARRIER, TILT, K_TRAP = 0.1, 10.0, 2.0, 2000.0     # nm, kJ/mol, kJ/mol, kJ/mol/nm^2
T_COLD, T_HOT = 300.0, 600.0
WARP, SCALE = 2.6, 1.3   # the map: x warped (exact map would be none of these), y and z scaled by 1.3, not sqrt 2
TIMESTEP_FS, SWAP_EVERY, ROUNDS = 0.5, 40, 6000


def double_well_xml(n_particles: int = 1) -> str:
    import openmm

    system = openmm.System()
    force = openmm.CustomExternalForce(
        f"{BARRIER}*((x/{A_NM})^2-1)^2 + {TILT}*x/{A_NM} + 0.5*{K_TRAP}*(y^2+z^2)")
    for i in range(n_particles):
        system.addParticle(1.0)
        force.addParticle(i, [])
    system.addForce(force)
    return openmm.XmlSerializer.serialize(system)


_UA = math.asinh(1.0)
_C1 = A_NM / math.sinh(WARP * _UA)


def warp(x):
    """f(x) = c sinh(k asinh(x/a)), f(+-a) = +-a, and log f'(x): monotone, not linear."""
    u = np.arcsinh(x / A_NM)
    return _C1 * np.sinh(WARP * u), np.log(_C1 * WARP * np.cosh(WARP * u) / (A_NM * np.cosh(u)))


def unwarp(y):
    u = np.arcsinh(y / _C1)
    return A_NM * np.sinh(u / WARP), np.log(A_NM * np.cosh(u / WARP) / (WARP * _C1 * np.cosh(u)))


class WarpMap:
    """A SwapMap: x warped, y and z scaled; `drop_logdet` reports a log-det of 0 (the bug)."""

    def __init__(self, drop_logdet: bool = False) -> None:
        self.drop_logdet = drop_logdet

    def _apply(self, x, g, s):
        a = x.numpy()
        px, ld = g(a[..., 0])
        out = np.stack([px, a[..., 1] * s, a[..., 2] * s], axis=-1)
        logdet = ld.sum(-1) + 2 * a.shape[1] * math.log(s)
        return torch.from_numpy(out), torch.from_numpy(logdet * (0.0 if self.drop_logdet else 1.0))

    def forward(self, x):
        return self._apply(x, warp, SCALE)

    def inverse(self, y):
        return self._apply(y, unwarp, 1.0 / SCALE)


class VelocitiesTravel(FlowSwapSampler):
    """The bug: velocities go with the configurations (unscaled) instead of being redrawn."""

    def _velocities_after_swap(self):
        return self.replicas[1].velocities(), self.replicas[0].velocities()


def _grid(temperature):
    x = np.linspace(-0.45, 0.45, 400_001)
    u = BARRIER * ((x / A_NM) ** 2 - 1) ** 2 + TILT * x / A_NM
    w = np.exp(-beta(temperature) * (u - u.min()))
    return x, w / w.sum()


def _exact_draws(temperature, rng, n):
    x, w = _grid(temperature)
    px = np.interp(rng.random(n), np.cumsum(w), x)
    s = math.sqrt(KB_KJ_PER_MOL_K * temperature / K_TRAP)
    return np.stack([px, rng.normal(0, s, n), rng.normal(0, s, n)], axis=-1)


def _z_scores(positions: np.ndarray) -> dict[str, float]:
    """(estimate - exact) / SE for moments of the cold samples; SE by 20 batch means."""
    x, w = _grid(T_COLD)
    exact = {"P(x>0)": w[x > 0].sum(), "<x^2>": (w * x**2).sum(), "<log f'(x)>": (w * warp(x)[1]).sum(),
             "<y^2+z^2>": 2 * KB_KJ_PER_MOL_K * T_COLD / K_TRAP}
    p = positions.astype(np.float64)[:, 0]
    series = {"P(x>0)": p[:, 0] > 0, "<x^2>": p[:, 0] ** 2, "<log f'(x)>": warp(p[:, 0])[1],
              "<y^2+z^2>": p[:, 1] ** 2 + p[:, 2] ** 2}
    out = {}
    for name, v in series.items():
        v = np.asarray(v, dtype=np.float64)
        size = len(v) // 20
        means = v[: 20 * size].reshape(20, size).mean(axis=1)
        out[name] = (v.mean() - exact[name]) / (means.std(ddof=1) / math.sqrt(20))
    return out


def _known_answer_run(broken: str | None, seed: int = 1) -> dict[str, float] | None:
    """z-scores of the cold replica; None when the chain blew up (a failure of its own)."""
    from molpt_tui.errors import UserError

    spec = MDSpec(double_well_xml(), TIMESTEP_FS, 1.0, "Reference")
    cls = VelocitiesTravel if broken == "velocities" else FlowSwapSampler
    sampler = cls(spec, T_COLD, T_HOT, WarpMap(drop_logdet=broken == "logdet"), SWAP_EVERY, ROUNDS, seed)
    rng = np.random.default_rng(seed + 100)
    # exact starting draws: no burn-in to wait for
    sampler.start([_exact_draws(T_COLD, rng, 1), _exact_draws(T_HOT, rng, 1)])
    try:
        while not sampler.done:
            sampler.advance()
    except UserError:
        return None
    acc, _ = sampler.acceptance()
    assert 0.4 < acc < 0.9  # swaps happen: the test would have no power otherwise
    return _z_scores(np.stack(sampler.cold_positions))


def test_flow_pt_samples_the_exact_cold_distribution_with_an_imperfect_map():
    z = _known_answer_run(None)
    assert z is not None
    assert all(abs(v) < 4.5 for v in z.values()), z


@pytest.mark.parametrize("broken", ["logdet", "velocities"])
def test_a_dropped_logdet_or_travelling_velocities_fail_the_same_check(broken):
    z = _known_answer_run(broken)
    assert z is None or max(abs(v) for v in z.values()) > 6.0, z


def test_the_naive_ladder_samples_the_exact_cold_distribution():
    spec = MDSpec(double_well_xml(), TIMESTEP_FS, 1.0, "Reference")
    ladder = (T_COLD, math.sqrt(T_COLD * T_HOT), T_HOT)
    sampler = LadderSampler(spec, ladder, SWAP_EVERY, ROUNDS // 2, seed=5)
    rng = np.random.default_rng(7)
    sampler.start([_exact_draws(t, rng, 1) for t in ladder])
    while not sampler.done:
        sampler.advance()
    p = sampler.progress()
    assert p.attempts == len(sampler.probs) > 0 and all(0.1 < a < 1 for a in p.pair_acc)
    z = _z_scores(np.stack(sampler.cold_positions))
    assert all(abs(v) < 4.5 for v in z.values()), z


def test_a_resumed_chain_continues_bit_for_bit():
    spec = MDSpec(double_well_xml(2), TIMESTEP_FS, 1.0, "Reference")
    rng = np.random.default_rng(0)
    starts = [_exact_draws(T_COLD, rng, 2), _exact_draws(T_HOT, rng, 2)]

    def fresh(rounds):
        s = FlowSwapSampler(spec, T_COLD, T_HOT, WarpMap(), 10, rounds, seed=3)
        s.start(starts)
        return s

    whole = fresh(60)
    while not whole.done:
        whole.advance()
    first = fresh(60)
    for _ in range(25):
        first.advance()
    arrays, trajectory = first.state_arrays(), first.trajectory()
    second = FlowSwapSampler(spec, T_COLD, T_HOT, WarpMap(), 10, 60, seed=999)  # the seed must not matter now
    second.load_state(arrays, trajectory, "trajectory")
    while not second.done:
        second.advance()
    assert second.deltas == whole.deltas and second.accepted == whole.accepted
    np.testing.assert_array_equal(np.stack(second.cold_positions), np.stack(whole.cold_positions))
    assert second.trips.round_trips == whole.trips.round_trips
    assert second.energy_evals == whole.energy_evals


def test_round_trips_count_end_to_end_journeys():
    trips = RoundTrips(3)
    trips.swap(0, 1)   # walker 0 in the middle
    trips.swap(1, 2)   # walker 0 at the top: its first half trip
    assert trips.round_trips == 0
    trips.swap(1, 2)
    trips.swap(0, 1)   # walker 0 back at the bottom: one round trip
    assert trips.round_trips == 1
    two = RoundTrips(2)
    for _ in range(4):
        two.swap(0, 1)
    assert two.round_trips == 4  # with two replicas every accepted swap is a half trip of both walkers


def test_maxwell_boltzmann_velocities_have_the_temperature():
    masses = np.array([1.0, 12.0, 16.0, 0.0])
    rng = np.random.default_rng(1)
    v = np.stack([maxwell_boltzmann(masses, 450.0, rng) for _ in range(20000)])
    var = v[:, :3].var(axis=(0, 2))
    np.testing.assert_allclose(var, KB_KJ_PER_MOL_K * 450.0 / masses[:3], rtol=0.03)
    assert np.all(v[:, 3] == 0.0)  # a massless site does not move


def test_batch_means_error_grows_with_correlation():
    rng = np.random.default_rng(2)
    iid = rng.normal(size=40000)
    mean, se = batch_means(iid)
    assert abs(mean) < 5 * se and se == pytest.approx(1 / math.sqrt(40000), rel=0.3)
    ar = np.empty(40000)
    ar[0] = 0.0
    noise = rng.normal(size=40000)
    for i in range(1, 40000):
        ar[i] = 0.9 * ar[i - 1] + noise[i]
    _, se_ar = batch_means(ar)
    # the AR(1) mean's true SE is sigma/(1-phi)/sqrt(n) = 10/sqrt(n); naive would say 2.3/sqrt(n)
    assert se_ar == pytest.approx(10 / math.sqrt(40000), rel=0.35)
    assert math.isnan(batch_means([1.0, 2.0])[1])


# --- the trained map through the command --------------------------------------------------------

@pytest.fixture(scope="module")
def trained_run(tiny_data, tmp_path_factory):
    from molpt_tui.cli import main

    run = tmp_path_factory.mktemp("pt") / "run"
    args = ["train", "--no-ui", "--preset", "quickstart", "--epochs", "3", "--out", str(run)]
    for item in TINY_DATA + TINY_TRAIN + [f"data.path={tiny_data}"]:
        args += ["--set", item]
    assert main(args) == 0
    return run


def _events(path):
    return list(read_events(path))


def test_pt_reproduces_training_acceptance_with_the_loaded_map(trained_run, tmp_path, capsys):
    from molpt_tui.cli import main

    out = tmp_path / "pt"
    code = main(["pt", str(trained_run), "--ns", "0.01", "--swap-every", "20", "--no-ui", "--out", str(out),
                 "--baseline", "ladder"])
    assert code == 0
    events = _events(out / "metrics.jsonl")
    (started,) = [e for e in events if isinstance(e, PTStarted)]
    blocks = [e for e in _events(trained_run / "metrics.jsonl") if isinstance(e, LogBlock)]
    logged = [b.acc_flow for b in blocks if b.epoch == started.model_epoch][-1]
    # The same held-out pairs through the loaded map: the very number training logged.
    assert started.train_acc_flow == logged
    assert started.check_acc_flow == pytest.approx(logged, rel=1e-6, abs=1e-9)
    # Sampling: agreement within the statistical error of both estimates.
    final = {e.sampler: e for e in events if isinstance(e, PTProgress)}
    flow = final["flow"]
    assert flow.attempts == 500 and flow.samples == 500 and flow.ns == pytest.approx(0.01)
    combined = math.hypot(flow.acc_se, started.check_acc_flow_se)
    assert abs(flow.acc - logged) < 4 * combined, (flow.acc, flow.acc_se, logged, started.check_acc_flow_se)
    assert flow.acc > flow.acc_naive  # the map helps even after three epochs (harmonic start)
    assert flow.round_trips > 0 and flow.energy_evals == 500 * (2 * 21 + 2)
    assert len(flow.populations) == len(started.states) == 5 and started.rama_label == "ALA2"
    # The ladder ran side by side with the same total MD time.
    ladder = final["ladder"]
    assert ladder.total_ns == pytest.approx(flow.total_ns, rel=0.01) and len(ladder.pair_acc) == 2
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.status == "completed"
    for name in ("pt_settings.json", "pt_checkpoint.npz", "trajectory_flow.npz", "trajectory_ladder.npz",
                 "summary.json", "validation_300_450.png", "populations_300_450.png"):
        assert (out / name).is_file(), name
    with np.load(out / "trajectory_flow.npz", allow_pickle=False) as traj:
        assert traj["positions"].shape == (500, 22, 3) and traj["hot_positions"].shape == (500, 22, 3)
        assert float(traj["temperature"]) == 300.0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["samplers"]["flow"]["attempts"] == 500
    printed = capsys.readouterr().out
    assert "flow-swap acc" in printed and "held-out acceptance of the loaded map" in printed


def test_signals_stop_with_a_checkpoint_and_resume_finishes(trained_run, tmp_path):
    from molpt_tui.app.pt import PTOptions, pt
    from molpt_tui.training.control import send_request
    from molpt_tui.training.pt_dir import PTDirectory

    out = tmp_path / "pt"
    seen = {"progress": 0}

    class Steer:
        """A checkpoint request through the control channel once sampling runs; SIGTERM once it
        has been answered."""

        def emit(self, event):
            if isinstance(event, RequestAcknowledged):
                seen["acked"] = True
            if isinstance(event, PTProgress):
                seen["progress"] += 1
                if seen["progress"] == 2:
                    send_request(PTDirectory(out).run, "checkpoint")
                if seen.get("acked") and not seen.get("signalled"):
                    seen["signalled"] = True
                    signal.raise_signal(signal.SIGTERM)

        def close(self):
            pass

    opts = PTOptions(run_dir=trained_run, ns=0.001, swap_every=10, out=out, ui=False, event_every_s=0.0)
    assert pt(opts, [Steer()]) == 143
    events = _events(out / "metrics.jsonl")
    acks = [e for e in events if isinstance(e, RequestAcknowledged)]
    assert [a.action for a in acks] == ["checkpoint", "stop"] and acks[0].detail.endswith("pt_checkpoint.npz")
    assert acks[1].detail == "received SIGTERM"
    assert any(isinstance(e, CheckpointSaved) and e.label == "manual" for e in events)
    stopped = events[-1]
    assert isinstance(stopped, Finished) and stopped.status == "stopped" and "SIGTERM" in stopped.message
    done_rounds = stopped.epoch
    assert 0 < done_rounds < 100

    assert pt(PTOptions(run_dir=trained_run, out=out, ui=False, resume=True)) == 0
    events = _events(out / "metrics.jsonl")
    starts = [e for e in events if isinstance(e, PTStarted)]
    assert [s.resumed for s in starts] == [False, True]
    assert starts[1].start_ns == pytest.approx(done_rounds * 10e-6)
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.status == "completed" and finished.epoch == 100
    with np.load(out / "trajectory_flow.npz", allow_pickle=False) as traj:
        assert len(traj["positions"]) == 100
    # raising --ns continues the same chain
    assert pt(PTOptions(run_dir=trained_run, out=out, ui=False, resume=True, ns=0.0012)) == 0
    last = [e for e in _events(out / "metrics.jsonl") if isinstance(e, PTProgress)][-1]
    assert last.attempts == 120


@pytest.mark.parametrize("case", ["no-run", "bad-model", "zero-ns", "zero-swap", "not-empty", "resume-nothing",
                                  "resume-other-seed"])
def test_bad_input_is_one_line_and_writes_nothing(trained_run, tmp_path, capsys, case):
    from molpt_tui.cli import main

    out = tmp_path / "pt"
    args = ["pt", str(trained_run), "--no-ui", "--out", str(out), "--ns", "0.001"]
    expect = {"no-run": "no such run directory", "bad-model": "--model", "zero-ns": "--ns",
              "zero-swap": "--swap-every", "not-empty": "not empty", "resume-nothing": "no such pt directory",
              "resume-other-seed": "--seed 9"}[case]
    if case == "no-run":
        args[1] = str(tmp_path / "missing")
    elif case == "bad-model":
        args += ["--model", str(tmp_path / "nope.pt")]
    elif case == "zero-ns":
        args[-1] = "0"
    elif case == "zero-swap":
        args += ["--swap-every", "0"]
    elif case == "not-empty":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    elif case == "resume-nothing":
        args += ["--resume"]
    elif case == "resume-other-seed":
        assert main(args) == 0
        capsys.readouterr()
        args += ["--resume", "--seed", "9"]
    before = sorted(p.name for p in out.iterdir()) if out.exists() else None
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()} if out.exists() else {}
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("molpt-tui: error: ") and expect in err[0], err
    after = sorted(p.name for p in out.iterdir()) if out.exists() else None
    assert after == before
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes if out.exists() else True


def test_the_live_path_refuses_a_map_that_does_not_fit_before_writing(trained_run, tmp_path, monkeypatch):
    """On a terminal the sampler runs in a child under the monitor; a checkpoint that does not fit
    the run must still be one line and exit 2 from the parent, with no pt directory made."""
    from molpt_tui.app.pt import PTOptions, pt_live
    from molpt_tui.errors import UserError
    from molpt_tui.training.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(trained_run / "best.pt")
    ckpt["model"].pop(next(iter(ckpt["model"])))  # a model of another shape
    bad = save_checkpoint(tmp_path / "other.pt", ckpt)
    out = tmp_path / "pt"

    def claimed(*args, **kwargs):  # fail at once rather than start a monitor without a terminal
        raise AssertionError("the pt directory was claimed before the map was checked")

    monkeypatch.setattr("molpt_tui.app.pt._claim", claimed)
    with pytest.raises(UserError, match="does not fit this model"):
        pt_live(PTOptions(run_dir=trained_run, model=str(bad), out=out, ns=0.001))
    assert not out.exists()


def test_pt_events_survive_the_metrics_log():
    from molpt_tui.training.metrics_log import decode_line

    started = PTStarted(run_dir="r/pt", source_run="r", model_path="r/best.pt", model_epoch=3, system="ala2",
                        t_cold=300.0, t_hot=1000.0, swap_every=100, timestep_fs=1.0, planned_ns=1.0,
                        platform="Reference", seed=1, ladder=[300.0, 547.7, 1000.0], states=["beta", "phi>0"])
    progress = PTProgress(sampler="ladder", ns=0.5, planned_ns=1.0, total_ns=1.5, ns_per_day=math.nan,
                          energy_evals=10, attempts=4, accepted=1, acc=0.25, acc_se=math.inf, pair_acc=[0.5, math.nan],
                          populations=[0.9, 0.1], populations_se=[0.01, 0.01])
    for event in (started, progress):
        back = decode_line(json.dumps(event.to_dict(), allow_nan=False))
        assert type(back) is type(event)
        assert json.dumps(back.to_dict()) == json.dumps(event.to_dict())


@pytest.mark.parametrize("peptide", [True, False])
def test_validation_figure_shows_ramachandran_maps_only_for_peptides(ala2_system, tmp_path, peptide):
    from molpt_tui.physics.torsions import backbone_of_topology
    from molpt_tui.report.validation_plots import (
        NO_BACKBONE_NOTE,
        ReducedEnergies,
        validation_figure,
        write_validation_figure,
    )

    rng = np.random.default_rng(0)
    x = ala2_system.positions[None] + rng.normal(0, 0.01, (50, ala2_system.n_atoms, 3))
    e = rng.normal(0, 3, 50)
    energies = ReducedEnergies(hot=e, cold_to_hot=np.append(e[:-2], [np.inf, 1e9]), cold=e, hot_to_cold=e + 1)
    kwargs = dict(cold=x, hot=x, cold_to_hot=x, hot_to_cold=x, energies=energies,
                  backbone=backbone_of_topology(ala2_system.topology) if peptide else None, t_cold=300.0,
                  t_hot=450.0, title="t")
    fig = validation_figure(**kwargs)
    assert len(fig.axes) == (6 if peptide else 2)
    titles = [ax.get_title() for ax in fig.axes]
    assert any(t.startswith("T⁻¹(hot data)") for t in titles) == peptide
    assert (NO_BACKBONE_NOTE in fig._suptitle.get_text()) != peptide
    legend = fig.axes[-2].get_legend().get_texts()[1].get_text()
    assert "1 beyond range" in legend and "1 non-finite" in legend  # outliers are counted, not plotted
    path = write_validation_figure(tmp_path / "v.png", **kwargs)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and [p.name for p in tmp_path.iterdir()] == ["v.png"]


def test_headless_pt_does_not_import_the_ui():
    import subprocess
    import sys

    code = ("import sys; from molpt_tui.cli import build_parser; import molpt_tui.app.pt; "
            "build_parser().parse_args(['pt', 'RUN', '--no-ui']); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich', 'plotext')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_pt_monitor_takes_the_terminal_flags_train_and_watch_take(monkeypatch, tmp_path):
    from molpt_tui import cli

    seen = []
    monkeypatch.setattr("molpt_tui.app.pt.pt", lambda opts: seen.append(opts) or 0)
    assert cli.main(["pt", str(tmp_path), "--ascii", "--no-mouse"]) == 0
    assert cli.main(["pt", str(tmp_path)]) == 0
    assert (seen[0].ascii_only, seen[0].no_mouse, seen[1].ascii_only, seen[1].no_mouse) == (True, True, False, False)
