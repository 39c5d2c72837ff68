"""Alert rules on synthetic histories: each fires on its failure mode, none fire on a healthy run."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from molpt_tui.training import alerts as A
from molpt_tui.training.events import EpochMetrics, LogBlock
from molpt_tui.training.history import History
from molpt_tui.training.schema import SchemaError


def healthy_series(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A run that learns: noisy exponential decay, mirrored log-dets, steady gradients."""
    rng = np.random.default_rng(seed)
    t = np.arange(1, n + 1, dtype=float)
    decay = np.exp(-t / 150.0)
    fwd_e = 40.0 + 400.0 * decay + rng.normal(0, 3.0, n)
    inv_e = 35.0 + 300.0 * decay + rng.normal(0, 3.0, n)
    fwd_ld = 12.0 + rng.normal(0, 0.5, n)
    inv_ld = -12.0 + rng.normal(0, 0.5, n)
    return {
        "fwd_energy": fwd_e, "inv_energy": inv_e, "fwd_logdet": fwd_ld, "inv_logdet": inv_ld,
        "loss": (fwd_e - fwd_ld) + (inv_e - inv_ld),
        "grad_norm": rng.lognormal(mean=1.0, sigma=0.3, size=n),
        "lr": np.full(n, 1e-3),
    }


def build(series: dict[str, np.ndarray], n_nonfinite=None, blocks=()) -> History:
    n = len(series["loss"])
    h = History()
    for i in range(n):
        h.add(EpochMetrics(
            epoch=i + 1,
            **{k: float(series[k][i]) for k in
               ("loss", "fwd_energy", "fwd_logdet", "inv_energy", "inv_logdet", "lr", "grad_norm")},
            n_nonfinite=0 if n_nonfinite is None else int(n_nonfinite[i]),
        ))
    for b in blocks:
        h.add(b)
    return h


def block(epoch: int, acc_flow: float, acc_naive: float = 0.136) -> LogBlock:
    return LogBlock(epoch=epoch, loss=1.0, fwd_energy=0.0, fwd_logdet=0.0, inv_energy=0.0,
                    inv_logdet=0.0, lr=1e-3, improvement_pct=0.0, acc_flow=acc_flow, acc_naive=acc_naive)


def prefix(h: History, n: int) -> History:
    out = History()
    out.epochs = h.epochs[:n]
    out.series = {k: v[:n] for k, v in h.series.items()}
    out.blocks = [b for b in h.blocks if b.epoch <= n]
    out.run = h.run
    return out


def rules(alerts) -> set[str]:
    return {a.rule for a in alerts}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_healthy_run_raises_nothing_at_any_point(seed):
    n = 1200
    blocks = [block(e, acc_flow=0.14 + 0.25 * (1 - math.exp(-e / 200))) for e in range(10, n + 1, 50)]
    h = build(healthy_series(n, seed), blocks=blocks)
    fired = set()
    for k in range(1, n + 1, 7):
        fired |= rules(A.evaluate(prefix(h, k)))
    assert fired == set()


def test_degenerate_histories_do_not_crash_or_fire():
    assert A.evaluate(History()) == []
    one = build({k: v[:1] for k, v in healthy_series(5).items()})
    assert A.evaluate(one) == []


def test_initial_loss_huge():
    s = healthy_series(30)
    s["loss"] = s["loss"].copy()
    s["loss"][0] = 3e16
    out = A.evaluate(build(s))
    assert rules(out) == {A.INITIAL_LOSS_HUGE}
    assert out[0].epoch == 1 and out[0].severity == "warning"
    assert "internal-coordinate" in out[0].hint
    s["loss"][0] = 9e14
    assert A.evaluate(build(s)) == []


def test_initial_loss_skips_leading_nan():
    s = healthy_series(30)
    s["loss"] = s["loss"].copy()
    s["loss"][0] = math.nan
    s["loss"][1] = 2e15
    assert A.INITIAL_LOSS_HUGE in rules(A.evaluate(build(s)))


@pytest.mark.parametrize("key", ["loss", "inv_energy", "fwd_logdet", "lr"])
def test_nonfinite_metric(key):
    s = healthy_series(40)
    s[key] = s[key].copy()
    s[key][-1] = math.inf if key != "loss" else math.nan
    out = [a for a in A.evaluate(build(s)) if a.rule == A.NONFINITE_METRIC]
    assert len(out) == 1 and out[0].severity == "error" and key in out[0].message
    assert "1e-4" in out[0].hint


def test_nan_grad_norm_means_not_measured_but_inf_is_an_alert():
    s = healthy_series(40)
    s["grad_norm"] = np.full(40, math.nan)
    assert A.evaluate(build(s)) == []
    s["grad_norm"][-1] = math.inf
    assert A.NONFINITE_METRIC in rules(A.evaluate(build(s)))


def test_nonfinite_energies_warns():
    s = healthy_series(40)
    counts = np.zeros(40, dtype=int)
    counts[-1] = 3
    out = A.evaluate(build(s, n_nonfinite=counts))
    assert rules(out) == {A.NONFINITE_ENERGIES}
    assert out[0].severity == "warning" and "3" in out[0].message
    assert "regularisation" in out[0].hint


def test_loss_rising_after_epoch_100():
    rng = np.random.default_rng(3)
    s = healthy_series(300)
    s["loss"] = s["loss"].copy()
    s["loss"][200:] = s["loss"][199] + np.linspace(0, 150, 100) + rng.normal(0, 5.0, 100)
    out = A.evaluate(build(s))
    assert rules(out) == {A.LOSS_RISING}
    assert "plateau" in out[0].hint and out[0].epoch == 300
    # A rise smaller than rising_min_rel of the loss is tolerated.
    assert A.evaluate(build(s), A.AlertThresholds(rising_min_rel=0.5)) == []
    # The same rise before epoch 100 is warmup territory.
    early = {k: v[:100].copy() for k, v in s.items()}
    early["loss"] = 100 + np.linspace(0, 150, 100)
    assert A.LOSS_RISING not in rules(A.evaluate(build(early)))


def test_loss_rising_robust_to_one_spike():
    s = healthy_series(400)
    s["loss"] = s["loss"].copy()
    s["loss"][-1] = 1e6
    assert A.LOSS_RISING not in rules(A.evaluate(build(s)))
    s["loss"][-25] = 1e6   # mid-window spike, tilts a least-squares fit but not a median slope
    assert A.LOSS_RISING not in rules(A.evaluate(build(s)))


def test_noisy_plateau_is_not_rising():
    rng = np.random.default_rng(5)
    fired = 0
    for trial in range(20):
        s = healthy_series(300, seed=trial)
        s["loss"] = 150.0 + rng.normal(0, 15.0, 300)
        fired += A.LOSS_RISING in rules(A.evaluate(build(s)))
    assert fired == 0


def test_inverse_diverging_while_forward_improves():
    s = healthy_series(80)
    s["inv_energy"] = s["inv_energy"].copy()
    s["fwd_energy"] = s["fwd_energy"].copy()
    s["inv_energy"][60:] = np.geomspace(200, 1e6, 20)
    s["fwd_energy"][60:] = np.linspace(150, 60, 20)
    out = A.evaluate(build(s))
    assert A.INVERSE_DIVERGING in rules(out)
    assert A.FORWARD_DIVERGING not in rules(out)
    alert = next(a for a in out if a.rule == A.INVERSE_DIVERGING)
    assert "hot temperature" in alert.hint and alert.epoch == 80


def test_forward_diverging_mirror_case():
    s = healthy_series(80)
    s["inv_energy"] = s["inv_energy"].copy()
    s["fwd_energy"] = s["fwd_energy"].copy()
    s["fwd_energy"][60:] = np.geomspace(200, 1e6, 20)
    s["inv_energy"][60:] = np.linspace(150, 60, 20)
    assert A.FORWARD_DIVERGING in rules(A.evaluate(build(s)))
    assert A.INVERSE_DIVERGING not in rules(A.evaluate(build(s)))


def test_both_directions_exploding_is_not_the_one_sided_rule():
    s = healthy_series(80)
    s["fwd_energy"] = s["fwd_energy"].copy()
    s["inv_energy"] = s["inv_energy"].copy()
    s["fwd_energy"][60:] = np.geomspace(200, 1e6, 20)
    s["inv_energy"][60:] = np.geomspace(200, 1e6, 20)
    assert not rules(A.evaluate(build(s))) & {A.FORWARD_DIVERGING, A.INVERSE_DIVERGING}


def test_loss_stuck_above_1000_after_500():
    rng = np.random.default_rng(1)
    s = healthy_series(600)
    s["loss"] = 5000.0 * np.exp(-np.arange(600) / 1000) + rng.normal(0, 50, 600)  # slowly falling, high
    out = A.evaluate(build(s))
    assert A.LOSS_STUCK in rules(out)
    assert A.LOSS_STUCK not in rules(A.evaluate(prefix(build(s), 499)))
    s["loss"] = s["loss"] / 10
    assert A.LOSS_STUCK not in rules(A.evaluate(build(s)))


def test_logdet_asymmetry():
    s = healthy_series(200)
    s["inv_logdet"] = -2.0 + np.random.default_rng(0).normal(0, 0.5, 200)  # fwd ~ +12
    out = A.evaluate(build(s))
    assert rules(out) == {A.LOGDET_ASYMMETRY}
    assert out[0].severity == "info" and "normalisation" in out[0].hint
    # Near the identity both log-dets are ~0; tiny absolute differences are not asymmetry.
    s["fwd_logdet"] = np.full(200, 0.3)
    s["inv_logdet"] = np.full(200, 0.1)
    assert A.evaluate(build(s)) == []


def test_grad_explosion():
    s = healthy_series(100)
    s["grad_norm"] = s["grad_norm"].copy()
    s["grad_norm"][-1] = 500.0
    out = A.evaluate(build(s))
    assert rules(out) == {A.GRAD_EXPLOSION}
    assert "clipping" in out[0].hint
    s["grad_norm"][-1] = 8.0   # ~3x the median of ~2.7: noisy, not exploding
    assert A.evaluate(build(s)) == []


def test_acceptance_below_naive():
    blocks = [block(10, 0.30), block(20, 0.10, acc_naive=0.136)]
    h = build(healthy_series(20), blocks=blocks)
    out = A.evaluate(h)
    assert rules(out) == {A.ACCEPTANCE_COLLAPSE}
    assert "best.pt" in out[0].hint and out[0].epoch == 20


def test_acceptance_drop_from_best():
    blocks = [block(10, 0.40, acc_naive=math.nan), block(20, 0.02, acc_naive=math.nan)]
    assert rules(A.evaluate(build(healthy_series(20), blocks=blocks))) == {A.ACCEPTANCE_COLLAPSE}
    # Tiny acceptances (wide gaps) fluctuate by orders of magnitude: not a collapse.
    blocks = [block(10, 1e-6, acc_naive=1e-9), block(20, 1e-8, acc_naive=1e-9)]
    assert A.evaluate(build(healthy_series(20), blocks=blocks)) == []


def test_disabled_rules_and_thresholds_from_mapping():
    s = healthy_series(30)
    s["loss"] = s["loss"].copy()
    s["loss"][0] = 3e16
    th = A.AlertThresholds.from_mapping({"disabled": ["initial_loss_huge"]})
    assert A.evaluate(build(s), th) == []
    th = A.AlertThresholds.from_mapping({"initial_loss_max": 1e17})
    assert A.evaluate(build(s), th) == []
    with pytest.raises(ValueError, match="initial_loss_mx"):
        A.AlertThresholds.from_mapping({"initial_loss_mx": 1.0})
    with pytest.raises(ValueError):
        A.AlertThresholds(disabled=["no_such_rule"])
    assert A.AlertThresholds.from_mapping(A.AlertThresholds().to_dict()) == A.AlertThresholds()


def test_every_rule_has_a_hint_and_unique_id():
    assert len(set(A.RULE_IDS)) == len(A.RULE_IDS)
    assert set(A.HINTS) == set(A.RULE_IDS)


def _alert(rule: str, epoch: int) -> A.Alert:
    return A.Alert(epoch=epoch, rule=rule, severity="warning", message="m", hint="h")


def test_tracker_deduplicates_and_rearms_after_clear():
    tr = A.AlertTracker(A.AlertThresholds(rearm_epochs=3))
    raised = []
    for epoch in range(1, 41):
        present = [_alert("loss_rising", epoch)] if (5 <= epoch <= 15 or epoch >= 30) else []
        # a flicker inside the hysteresis: absent for one epoch, back again
        if epoch == 10:
            present = []
        raised += [(a.rule, epoch) for a in tr.update(present, epoch)]
    assert raised == [("loss_rising", 5), ("loss_rising", 30)]


def test_tracker_state_roundtrip_gives_exact_resume():
    th = A.AlertThresholds(rearm_epochs=2)
    tr = A.AlertTracker(th)
    assert len(tr.update([_alert("grad_explosion", 5), _alert("loss_stuck", 5)], 5)) == 2
    state = json.loads(json.dumps(tr.state_dict()))   # must survive JSON (checkpoint metadata)
    resumed = A.AlertTracker(th)
    resumed.load_state_dict(state)
    assert resumed.active == tr.active
    assert resumed.update([_alert("grad_explosion", 6)], 6) == []
    assert tr.update([_alert("grad_explosion", 6)], 6) == []
    # loss_stuck cleared at 7 in both, so its return at 8 is news in both
    for t in (tr, resumed):
        t.update([], 7)
        assert [a.rule for a in t.update([_alert("loss_stuck", 8)], 8)] == ["loss_stuck"]


def test_a_fresh_tracker_state_roundtrips():
    resumed = A.AlertTracker()
    resumed.load_state_dict(json.loads(json.dumps(A.AlertTracker().state_dict())))
    assert resumed.active == frozenset() and resumed.state_dict()["epoch"] is None


@pytest.mark.parametrize(("state", "key"), [
    ({"epoch": 3, "active": {}}, "version"),
    ({"version": "1", "epoch": 3, "active": {}}, "version"),
    ({"version": 99, "epoch": 3, "active": {}}, "version"),
    ({"version": 1, "active": {}}, "epoch"),
    ({"version": 1, "epoch": "3", "active": {}}, "epoch"),
    ({"version": 1, "epoch": True, "active": {}}, "epoch"),
    ({"version": 1, "epoch": 3, "active": ["loss_rising"]}, "active"),
    ({"version": 1, "epoch": 3, "active": {"loss_rising": 2.5}}, "active.loss_rising"),
    ({"version": 1, "epoch": 3, "active": {7: 2}}, "active"),
])
def test_tracker_refuses_a_malformed_state_and_keeps_its_own(state, key):
    tr = A.AlertTracker()
    tr.update([_alert("loss_rising", 4)], 4)
    with pytest.raises(SchemaError) as info:
        tr.load_state_dict(state)
    assert info.value.key == key
    assert tr.active == frozenset({"loss_rising"})
    assert tr.state_dict()["epoch"] == 4


def test_tracker_rollback_clears_memory():
    tr = A.AlertTracker()
    assert tr.update([_alert("loss_rising", 300)], 300)
    assert tr.update([_alert("loss_rising", 301)], 301) == []
    assert tr.update([_alert("loss_rising", 200)], 200)   # resumed from best.pt at an earlier epoch


def test_tracker_check_on_history():
    s = healthy_series(30)
    s["loss"] = s["loss"].copy()
    s["loss"][0] = 3e16
    h = build(s)
    tr = A.AlertTracker()
    assert [a.rule for a in tr.check(h)] == [A.INITIAL_LOSS_HUGE]
    assert tr.check(h) == []


def kl_block(epoch: int, kl: float, kl_val: float) -> LogBlock:
    return LogBlock(epoch=epoch, loss=1.0, fwd_energy=0.0, fwd_logdet=0.0, inv_energy=0.0, inv_logdet=0.0,
                    lr=1e-3, improvement_pct=0.0, kl=kl, kl_val=kl_val)


def test_overfitting_fires_when_held_out_kl_rises_while_training_kl_falls():
    s = healthy_series(60)
    kls = [(0.50, 0.60), (0.40, 0.50), (0.30, 0.45), (0.20, 0.60), (0.15, 0.65), (0.10, 0.70)]
    blocks = [kl_block(10 * (i + 1), kl, kv) for i, (kl, kv) in enumerate(kls)]
    out = [a for a in A.evaluate(build(s, blocks=blocks)) if a.rule == A.OVERFITTING]
    assert len(out) == 1 and out[0].epoch == 60 and "best.pt" in out[0].hint
    assert "0.45" in out[0].message and "epoch 30" in out[0].message


@pytest.mark.parametrize("kls", [
    [(0.50, 0.60), (0.40, 0.50), (0.30, 0.45), (0.25, 0.42), (0.20, 0.40), (0.15, 0.39)],  # both improve
    [(0.50, 0.60), (0.40, 0.50), (0.30, 0.45), (0.28, 0.47), (0.27, 0.48), (0.26, 0.46)],  # noise, < 0.1 kT
    # both worsen: not overfitting
    [(0.50, 0.60), (0.40, 0.50), (0.30, 0.45), (0.40, 0.60), (0.50, 0.65), (0.55, 0.70)],
])
def test_overfitting_quiet_otherwise(kls):
    s = healthy_series(60)
    blocks = [kl_block(10 * (i + 1), kl, kv) for i, (kl, kv) in enumerate(kls)]
    assert A.OVERFITTING not in rules(A.evaluate(build(s, blocks=blocks)))


def test_overfitting_fires_on_the_measured_aa_300_450_small_pattern():
    """Held-out KL per log block of a real 3,000-sample run (best at epoch 9, then 0.52, 0.45,
    0.69, 1.05 kT) while the training KL fell below zero."""
    s = healthy_series(40)
    pattern = [(9, 0.52, 0.445), (10, 0.51, 0.52), (20, 0.23, 0.45), (30, -0.29, 0.69), (40, -0.84, 1.05)]
    blocks = [kl_block(e, kl, kv) for e, kl, kv in pattern]
    out = [a for a in A.evaluate(build(s, blocks=blocks)) if a.rule == A.OVERFITTING]
    assert len(out) == 1 and out[0].epoch == 40
    assert not [a for a in A.evaluate(build(s, blocks=blocks[:-1])) if a.rule == A.OVERFITTING]


# --- divergence is a verdict ------------------------------------------------------------------

def reported_divergence() -> History:
    """The reported run (--lr 0.05, no warmup): loss 0.51 -> 3243 -> 3763 -> 3775 kT, Fwd_E up to
    1e19, Inv_E up to 1e7: both directions explode while the regularised loss saturates."""
    from molpt_tui.training.events import RunStarted

    h = History()
    h.add(RunStarted(run_dir="/runs/my run", preset="quickstart", model="m", t_cold=300, t_hot=450, epochs=30,
                     batch_size=128, lr=0.05, device="cpu", n_params=1, engine="openmm", data_samples=40000))
    rows = [(0.51, 5.47, 11.69, -4.75, -11.48), (3242.97, 2.361e19, -784.2, 1.895e7, -553.9),
            (3763.36, 2.830e13, -1031.5, 1995.73, -715.7), (3775.23, 1.580e16, -1044.7, 2383.83, -714.1),
            (3762.18, 1.475e11, -1019.5, 1534.16, -730.6)]
    for epoch, (loss, fe, fl, ie, il) in enumerate(rows):
        h.add(EpochMetrics(epoch=epoch, loss=loss, fwd_energy=fe, fwd_logdet=fl, inv_energy=ie, inv_logdet=il,
                           lr=0.05))
    return h


def test_the_reported_divergence_is_a_verdict_naming_both_directions():
    from molpt_tui.training.verdict import divergence

    h = reported_divergence()
    th = A.AlertThresholds()
    assert divergence(prefix(h, 3), th) is None        # epochs 0-2: two exploded epochs, not yet three
    found = divergence(prefix(h, 4), th)
    assert found is not None and found.epoch == 3 and found.since_epoch == 1
    assert found.both_directions and found.names == ["Fwd_E", "Inv_E", "loss"]
    assert found.summary() == "Fwd_E and Inv_E (both directions) and the loss exploded"
    alerts = A.evaluate(prefix(h, 4))
    (verdict,) = [a for a in alerts if a.rule == A.DIVERGED]
    assert verdict.severity == "error" and "Fwd_E" in verdict.message and "Inv_E" in verdict.message
    # one alert for both directions, not the one-sided rules flipping between them
    assert not rules(alerts) & {A.INVERSE_DIVERGING, A.FORWARD_DIVERGING}
    assert verdict.command == "molpt-tui train --resume '/runs/my run' --from best --lr 5e-3"


def test_the_loss_rising_alert_fires_on_a_jump_before_epoch_100():
    h = reported_divergence()
    assert A.LOSS_RISING not in rules(A.evaluate(prefix(h, 2)))  # one epoch up: a spike so far
    (alert,) = [a for a in A.evaluate(prefix(h, 3)) if a.rule == A.LOSS_RISING]
    assert "3763.36 kT" in alert.message and "best 0.51 kT (epoch 0)" in alert.message
    assert alert.command.startswith("molpt-tui train --resume '/runs/my run' --from best --lr 5e-3")


def test_a_spike_or_a_healthy_run_is_not_divergence():
    from molpt_tui.training.verdict import divergence

    s = healthy_series(300)
    s["fwd_energy"] = s["fwd_energy"].copy()
    s["fwd_energy"][100:102] = 1e9          # two exploded epochs, then back
    h = build(s)
    th = A.AlertThresholds()
    assert all(divergence(prefix(h, k), th) is None for k in range(1, 301))
    assert divergence(build(healthy_series(300)), th) is None


def test_nonfinite_epochs_count_as_exploded_and_thresholds_are_configurable():
    from molpt_tui.training.verdict import divergence

    s = healthy_series(20)
    for key in ("loss", "fwd_energy", "inv_energy"):
        s[key] = s[key].copy()
        s[key][-3:] = math.nan                # every step of the last 3 epochs failed
    found = divergence(build(s), A.AlertThresholds())
    assert found is not None and found.since_epoch == 18 and "not finite" in found.describe()
    assert divergence(build(s), A.AlertThresholds(diverged_epochs=4)) is None
    # orders of magnitude over the best, on max(|best|, diverged_scale)
    t = healthy_series(10)
    t["inv_energy"] = np.concatenate([t["inv_energy"][:7], [1e5, 1e5, 1e5]])
    assert divergence(build(t), A.AlertThresholds()) is not None
    assert divergence(build(t), A.AlertThresholds(diverged_orders=3.0)) is None


def test_every_hint_that_suggests_an_action_gives_its_command_for_this_run():
    h = reported_divergence()
    for rule in A.RULE_IDS:
        command = A.command_for(rule, h)
        assert command.startswith("molpt-tui train "), rule
        assert "'/runs/my run" in command, rule   # the real run directory, quoted for the shell
    assert A.command_for(A.OVERFITTING, h) == (
        "molpt-tui train --preset quickstart --set data.n_samples=80000 --set data.path=data/quickstart_80000.npz "
        "--out '/runs/my run_80000'")
    assert A.command_for(A.LOSS_STUCK, h) == "molpt-tui train --resume '/runs/my run' --epochs 60"
    # without a run header the placeholder says what to fill in
    assert A.command_for(A.DIVERGED, History()) == "molpt-tui train --resume RUN_DIR --from best --lr 1e-4"
