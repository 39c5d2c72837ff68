"""The live checklist of good signs: a pure function of the history, each sign with its epoch."""
from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from molpt_tui.training.checklist import CHECK_IDS, checklist
from molpt_tui.training.events import EpochMetrics, LogBlock, RunStarted
from molpt_tui.training.history import History


def run(warmup: int = 5, lr: float = 1e-3) -> RunStarted:
    return RunStarted(run_dir="r", preset="p", model="m", t_cold=300, t_hot=450, epochs=60, batch_size=8, lr=lr,
                      device="cpu", n_params=1, engine="openmm", warmup_epochs=warmup)


def epoch(e: int, loss: float = 1.0, fwd: float = 5.0, inv: float = -5.0, lr: float = 1e-3) -> EpochMetrics:
    return EpochMetrics(epoch=e, loss=loss, fwd_energy=fwd, fwd_logdet=0.0, inv_energy=inv, inv_logdet=0.0, lr=lr)


def block(e: int, kl_val: float, acc: float = 0.6, naive: float = 0.1, se: float = 0.01) -> LogBlock:
    return LogBlock(epoch=e, loss=1.0, fwd_energy=0, fwd_logdet=0, inv_energy=0, inv_logdet=0, lr=1e-3,
                    improvement_pct=math.nan, kl_val=kl_val, kl_val_se=0.01, acc_flow=acc, acc_flow_se=se,
                    acc_naive=naive, acc_naive_se=se)


def states(h: History) -> dict[str, str]:
    return {c.key: c.state for c in checklist(h)}


def healthy(n: int = 30) -> History:
    h = History()
    h.add(run(warmup=5))
    for e in range(n + 1):
        lr = 1e-3 * min(1.0, (e + 1) / 5)
        h.add(epoch(e, loss=10.0 - 0.2 * e, fwd=5.0 - 0.05 * e, inv=-5.0 - 0.05 * e, lr=lr))
        if e <= 10 or e % 10 == 0:
            h.add(block(e, kl_val=0.4 * math.exp(-e / 20), acc=0.6 + 0.005 * e))
    return h


def test_everything_is_pending_before_any_epoch():
    items = checklist(History())
    assert [c.key for c in items] == list(CHECK_IDS)
    assert all(c.state == "pending" and c.since_epoch is None for c in items)


def test_a_healthy_run_passes_every_sign_and_says_since_when():
    items = {c.key: c for c in checklist(healthy())}
    assert {k: c.state for k, c in items.items()} == dict.fromkeys(CHECK_IDS, "pass")
    assert items["initial_loss"].since_epoch == 0 and "10.00 kT at epoch 0" in items["initial_loss"].detail
    assert items["improvement"].since_epoch == 1
    assert "flow 0.750" in items["acceptance"].detail and "vs naive 0.100" in items["acceptance"].detail
    assert "epochs 0-5" in items["lr_warmup"].detail or "over epochs 0-5" in items["lr_warmup"].detail


def test_failing_signs_and_the_epoch_they_changed():
    h = healthy(30)
    for e in range(31, 41):                       # Fwd_E climbs, the validation KL comes back
        h.add(epoch(e, fwd=5.0 + 2.0 * (e - 30), inv=-6.5))
    h.add(block(40, kl_val=0.9, acc=0.05))
    items = {c.key: c for c in checklist(h)}
    assert items["fwd_decreasing"].state == "fail" and items["fwd_decreasing"].since_epoch > 30
    assert items["inv_decreasing"].state == "pass"
    assert items["improvement"].state == "fail" and "no better than the untrained map" in items["improvement"].detail
    assert items["improvement"].since_epoch == 40
    assert items["acceptance"].state == "fail" and items["acceptance"].since_epoch == 40


def test_the_reported_divergence_fails_warmup_and_energies():
    h = History()
    h.add(run(warmup=0, lr=0.05))
    for e, (fwd, inv) in enumerate([(5.47, -4.75), (2.4e19, 1.9e7), (2.8e13, 1996.0), (1.6e16, 2384.0)]):
        h.add(epoch(e, loss=0.5 if e == 0 else 3500.0, fwd=fwd, inv=inv, lr=0.05))
    got = states(h)
    assert got["lr_warmup"] == "fail" and got["fwd_decreasing"] == "fail" and got["inv_decreasing"] == "fail"
    assert got["initial_loss"] == "pass"


def test_a_huge_initial_loss_and_a_warmup_cut_by_a_rollback_fail():
    h = History()
    h.add(run(warmup=10))
    for e, lr in enumerate([1e-4, 2e-4, 3e-4, 1.5e-4, 2.5e-4]):   # a NaN rollback halves the LR at epoch 3
        h.add(epoch(e, loss=1e16 if e == 0 else 100.0, lr=lr))
    items = {c.key: c for c in checklist(h)}
    assert items["initial_loss"].state == "fail"
    assert items["lr_warmup"].state == "fail" and "epoch 3" in items["lr_warmup"].detail
    assert items["lr_warmup"].since_epoch == 3


def test_acceptance_within_error_bars_is_pending_not_passed():
    h = History()
    h.add(run())
    h.add(epoch(0))
    h.add(block(0, kl_val=0.4, acc=0.12, naive=0.10, se=0.02))
    item = {c.key: c for c in checklist(h)}["acceptance"]
    assert item.state == "pending" and "within 2 standard errors" in item.detail


def test_long_histories_are_looked_up_at_the_log_blocks():
    h = healthy(30)
    for e in range(31, 2000):
        h.add(epoch(e, fwd=3.5, inv=-6.5))
        if e % 100 == 0:
            h.add(block(e, kl_val=0.05, acc=0.8))
    items = {c.key: c for c in checklist(h)}
    assert all(c.state == "pass" for c in items.values())
    assert items["acceptance"].since_epoch == 0


def test_a_one_epoch_warmup_is_no_warmup():
    h = History()
    h.add(run(warmup=1))
    for e in range(3):
        h.add(epoch(e, lr=5e-4))          # LRSchedule: warmup_epochs = 1 gives the full LR at once
    item = {c.key: c for c in checklist(h)}["lr_warmup"]
    assert item.state == "fail" and "flat" in item.detail


def test_the_run_is_judged_by_its_own_alert_limits_as_its_log_recorded_them():
    from molpt_tui.config.alerts import AlertThresholds
    from molpt_tui.training.events import from_dict

    h = healthy()
    assert states(h)["initial_loss"] == "pass"  # 10 kT under the default limit of 1e15 kT
    keys, values = AlertThresholds(initial_loss_max=5.0).numeric()
    started = run(warmup=5)
    started.alert_keys, started.alert_values = keys, values
    strict = History()
    strict.add(from_dict(started.to_dict()))  # through the log's JSON form, as watch reads it
    for e in range(len(h.epochs)):
        strict.add(epoch(e, loss=10.0 - 0.2 * e, fwd=5.0 - 0.05 * e, inv=-5.0 - 0.05 * e,
                         lr=1e-3 * min(1.0, (e + 1) / 5)))
    item = {c.key: c for c in checklist(strict)}["initial_loss"]
    assert item.state == "fail" and "limit 5e+00 kT" in item.detail
    # a log with unknown keys or values this version would refuse keeps the defaults for them
    assert AlertThresholds.from_numeric(["initial_loss_max", "no_such_key", "rising_window"],
                                        [-1.0, 3.0, 2.5]) == AlertThresholds()


def _per_probe_reference(h: History) -> list[tuple[str, str, int | None, str]]:
    """The checklist the slow, obvious way: each probe epoch judged on a History rebuilt from
    the events up to it, then the same "since when" rule."""
    from molpt_tui.training.checklist import _ALL_EPOCHS_UP_TO

    assert len(h.epochs) <= _ALL_EPOCHS_UP_TO  # every epoch is a probe
    events = [h.run] if h.run is not None else []
    per_probe = []
    for i, e in enumerate(h.epochs):
        part = History.from_events(events)
        for j in range(i + 1):
            part.add(EpochMetrics(epoch=h.epochs[j], **{k: h.series[k][j] for k in
                                                        ("loss", "fwd_energy", "inv_energy", "lr")},
                                  fwd_logdet=0.0, inv_logdet=0.0))
        for b in h.blocks:
            if b.epoch <= e:
                part.add(b)
        per_probe.append({c.key: (c.state, c.detail) for c in checklist(part)})
    if not per_probe:
        return [(c.key, c.state, None, c.detail) for c in checklist(History.from_events(events))]
    out = []
    for key in CHECK_IDS:
        states = [p[key][0] for p in per_probe]
        i = len(states) - 1
        while i > 0 and states[i - 1] == states[-1]:
            i -= 1
        since = None if states[-1] == "pending" and i == 0 else h.epochs[i]
        out.append((key, states[-1], since, per_probe[-1][key][1]))
    return out


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(-1e3, 1e20) | st.sampled_from([math.nan, math.inf]),
                          st.floats(-50, 1e18) | st.just(math.nan), st.floats(1e-5, 1e-3)), min_size=0, max_size=30),
       st.integers(0, 6), st.sampled_from([3, 5, 10]))
def test_the_fast_checklist_equals_judging_each_epoch_on_its_own_history(rows, warmup, every):
    """Arrays are converted once and sliced per probe (a 1e5-epoch run took 50 s, now 0.4 s);
    the states, epochs and details must be those of rebuilding the history at each probe."""
    h = History()
    h.add(run(warmup=warmup))
    for e, (loss, fwd, lr) in enumerate(rows):
        h.add(epoch(e, loss=loss, fwd=fwd, inv=-fwd, lr=lr))
        if e % every == 0:
            h.add(block(e, kl_val=0.4 / (1 + e) if e % 2 == 0 else 0.5, acc=min(1.0, 0.1 + 0.02 * e)))
    got = [(c.key, c.state, c.since_epoch, c.detail) for c in checklist(h)]
    assert got == _per_probe_reference(h)
