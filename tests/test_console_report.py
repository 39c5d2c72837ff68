"""Headless console reporter: what a user sees in a terminal and what lands in a SLURM log."""
from __future__ import annotations

import io
import math
import subprocess
import sys

from molpt_tui.report.console import ConsoleReporter, fmt_num, fmt_prob
from molpt_tui.training.events import Alert, CheckpointSaved, EpochMetrics, Finished, LogBlock, Message, RunStarted


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def started(**kw) -> RunStarted:
    base = dict(run_dir="/runs/ala2 300-450", preset="small", model="coupling flow (internal coordinates)",
                t_cold=300, t_hot=450, epochs=200, batch_size=64, lr=1e-3, device="cuda:0",
                n_params=440_123, engine="openmm (Reference, 2 workers)", engine_reason="no CUDA platform")
    base.update(kw)
    return RunStarted(**base)


def metrics(epoch: int, loss: float = 123.456) -> EpochMetrics:
    return EpochMetrics(epoch=epoch, loss=loss, fwd_energy=61.5, fwd_logdet=11.25, inv_energy=48.75,
                        inv_logdet=-11.5, lr=5e-4)


def block(epoch: int = 100, **kw) -> LogBlock:
    base = dict(epoch=epoch, loss=98.765, fwd_energy=51.0, fwd_logdet=12.0, inv_energy=40.0, inv_logdet=-11.0,
                lr=2.5e-4, improvement_pct=87.25, acc_flow=0.412, acc_naive=0.136, ess_fwd=12.34, ess_inv=10.5,
                roundtrip_err=3.2e-6)
    base.update(kw)
    return LogBlock(**base)


def reporter(tty: bool, every: float = 30.0):
    out = io.StringIO()
    clock = FakeClock()
    return ConsoleReporter(out, isatty=tty, progress_every_s=every, clock=clock), out, clock


def test_banner_contents():
    rep, out, _ = reporter(tty=False)
    rep.emit(started())
    text = out.getvalue()
    for needle in ("coupling flow (internal coordinates)", "300.0K \u2192 450.0K", "200", "64", "1.00e-03",
                   "cuda:0", "440,123", "openmm (Reference, 2 workers)", "no CUDA platform",
                   "/runs/ala2 300-450", "small"):
        assert needle in text, needle
    assert "Resuming" not in text


def test_banner_gives_each_split_its_size_and_how_validation_is_held_out():
    rep, out, _ = reporter(tty=False)
    rep.emit(started(train_pairs=144_000, val_held=16_000, val_blocks=5, val_evaluated=1_000, test_pairs=10_000))
    rep.emit(started(train_pairs=450, val_held=50, val_blocks=1, val_evaluated=50))
    lines = [line for line in out.getvalue().splitlines() if line.startswith("  Splits:")]
    assert lines == [
        "  Splits:      training 144,000 pairs | validation 16,000 in 5 blocks over the trajectories, "
        "1,000 evaluated | test 10,000 (independent MD run)",
        "  Splits:      training 450 pairs | validation 50 at the end of the trajectories | no test set"]
    rep2, out2, _ = reporter(tty=False)
    rep2.emit(started())  # a log written before the splits were recorded
    assert "Splits:" not in out2.getvalue()


def test_banner_resumed():
    rep, out, _ = reporter(tty=False)
    rep.emit(started(start_epoch=57, resumed=True))
    assert "Resuming from epoch 57" in out.getvalue()


def test_banner_ascii_stream_falls_back_to_plain_arrow():
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="ascii")
    rep = ConsoleReporter(stream, isatty=False)
    rep.emit(started())
    rep.emit(Message(text="caf\u00e9 \u2192 ok"))   # must not raise on a C-locale log file
    stream.flush()
    text = raw.getvalue().decode("ascii")
    assert "300.0K -> 450.0K" in text and "caf? ? ok" in text


def test_block_contents():
    rep, out, _ = reporter(tty=False)
    rep.emit(started())
    rep.emit(block(0, kl=0.68, kl_val=0.41))
    rep.emit(block(100, acc_flow_se=0.012, acc_naive_se=0.01, ess_fwd_se=1.2, ess_inv_se=0.9, kl=0.3, kl_val=0.27,
                   kl_val_se=0.02, energy_evals_total=123456))
    text = out.getvalue()
    text = text[text.index("Epoch 100/200"):]
    for needle in ("Loss (training):              98.77 kT", "Fwd_E      51.00 kT | LogDet      12.00",
                   "Inv_E      40.00 kT | LogDet     -11.00", "LR:                      2.50e-04",
                   "KL fwd+inv:              train       0.30 kT | validation       0.27 \u00b1 0.02 kT",
                   "Validation KL vs start:  \u221234 %",
                   "Acceptance (validation): flow 0.412 \u00b1 0.012 vs naive 0.136 \u00b1 0.010",
                   "ESS (validation):        fwd 12.3 \u00b1 1.2 % | inv 10.5 \u00b1 0.9 %",
                   "Round-trip error:        3.20e-06 nm", "Energy evaluations:      123,456 so far"):
        assert needle in text, needle


def test_block_omits_unevaluated_metrics():
    rep, out, _ = reporter(tty=False)
    rep.emit(LogBlock(epoch=5, loss=1.0, fwd_energy=1, fwd_logdet=0, inv_energy=1, inv_logdet=0, lr=1e-3,
                      improvement_pct=math.nan))
    text = out.getvalue()
    assert "Epoch 5" in text and "Validation KL vs start:  \u2014" in text
    assert "Acceptance" not in text and "ESS" not in text and "Round-trip" not in text


def test_a_percentage_only_where_it_means_something():
    """The reported run showed 369.7 % for a KL gone negative and -436424539171231232.0 % for
    one that exploded; neither is a change one can read."""
    from molpt_tui.report.console import fmt_change

    assert fmt_change(0.41, 0.27) == "\u221234 %"
    assert fmt_change(0.41, 0.80) == "+95 %"
    # a change that rounds to nothing has no sign
    assert fmt_change(0.7571, 0.7571) == fmt_change(0.7571, 0.7572) == fmt_change(0.7571, 0.757) == "0 %"
    assert fmt_change(0.41, -0.11) == "\u2014"        # the estimate went below its floor: noise, not 127 %
    assert fmt_change(-0.05, 0.2) == "\u2014"
    assert fmt_change(0.30, 1.44e18) == "diverged"
    assert fmt_change(0.30, math.inf) == "diverged" and fmt_change(0.30, math.nan) == "diverged"
    assert fmt_change(math.nan, 0.2) == "\u2014"
    rep, out, _ = reporter(tty=False)
    rep.emit(started())
    rep.emit(block(0, kl_val=0.30))
    rep.emit(block(2, kl_val=1.437e18, loss=3763.36, fwd_energy=2.83e13))
    text = out.getvalue()
    assert "Validation KL vs start:  diverged" in text and "%" not in text.split("Epoch 2/200")[1].split("ESS")[0]
    assert "Fwd_E   2.83e+13 kT" in text     # the exploded value itself, in the column's format
    widths = {len(line) for line in text.splitlines() if line.startswith("  Forward:")}
    assert len(widths) == 1                  # one column width whatever the size of the number


def test_non_tty_has_no_carriage_returns_and_prints_periodically():
    rep, out, clock = reporter(tty=False, every=30.0)
    rep.emit(started())
    for epoch in range(1, 101):
        clock.t += 2.0            # 2 s per epoch -> a line every 15 epochs
        rep.emit(metrics(epoch))
    rep.close()
    text = out.getvalue()
    assert "\r" not in text
    progress = [line for line in text.splitlines() if "| Loss " in line]
    # first epoch as a sign of life, then every 30 s
    assert [line.split("epoch ")[1].split("/")[0] for line in progress] == \
        ["1", "16", "31", "46", "61", "76", "91"]
    last = progress[-1]
    assert "epoch 91/200 (45.5%)" in last
    assert "Loss 123.46" in last and "Fwd_E 61.50" in last and "Inv_E 48.75" in last and "LR 5.00e-04" in last
    assert "2.00 s/it" in last and "ETA 0:03:38" in last   # 109 epochs left * 2 s


def test_non_tty_progress_line_at_log_blocks():
    rep, out, _clock = reporter(tty=False, every=1e9)
    rep.emit(started())
    rep.emit(metrics(1))
    rep.emit(metrics(2))
    rep.emit(block(2))
    lines = out.getvalue().splitlines()
    progress = [i for i, line in enumerate(lines) if "| Loss " in line]
    assert len(progress) == 2
    assert "epoch 2/200" in lines[progress[1]]
    assert progress[1] < lines.index("Epoch 2/200")


def test_tty_mode_uses_a_live_bar_with_postfix():
    rep, out, _ = reporter(tty=True)
    rep.emit(started())
    for epoch in range(1, 4):
        rep.emit(metrics(epoch))
    rep.emit(block(3))
    rep.emit(Finished(status="completed", epoch=3))
    text = out.getvalue()
    assert "\r" in text
    assert "Loss=123.46" in text and "Fwd_E=61.50" in text and "Inv_E=48.75" in text and "LR=5.00e-04" in text
    assert "3/200" in text and "Epoch 3/200" in text


def test_tty_bar_follows_a_rollback():
    rep, _out, _ = reporter(tty=True)
    rep.emit(started())
    rep.emit(metrics(50))
    rep.emit(metrics(20))
    assert rep._bar.n == 20
    rep.close()


def test_alert_message_checkpoint_lines():
    rep, out, _ = reporter(tty=False)
    rep.emit(Alert(epoch=50, rule="inverse_diverging", severity="error", message="Inv_E is exploding",
                   hint="Lower the learning rate to 1e-4", command="molpt-tui train --resume r --from best --lr 1e-4"))
    rep.emit(Message(text="data generated", level="info"))
    rep.emit(CheckpointSaved(epoch=60, path="/runs/x/best.pt", label="best"))
    text = out.getvalue()
    assert ("[ERROR] epoch 50 inverse_diverging: Inv_E is exploding\n  Fix: Lower the learning rate to 1e-4\n"
            "  Run: molpt-tui train --resume r --from best --lr 1e-4") in text
    assert "[info] data generated" in text
    assert "Checkpoint saved (best, epoch 60): /runs/x/best.pt" in text


def test_final_block_completed_lists_files():
    rep, out, _ = reporter(tty=False)
    rep.emit(started())
    files = ["/runs/x/best.pt", "/runs/x/loss_curves_300_450.png", "/runs/x/metrics.jsonl"]
    rep.emit(Finished(status="completed", epoch=200, files=files, best_loss=-12.5, improvement_pct=34.1,
                      best_epoch=58, best_score=0.27, best_metric="validation KL", start_score=0.41,
                      final_model="/runs/x/molecular_pt_300_450.pt", energy_evals=768000, elapsed_s=125.0))
    text = out.getvalue()
    tail = text[text.index("Training completed at epoch 200/200"):]
    assert "Results saved to: /runs/ala2 300-450" in tail
    for f in files:
        assert f"  {f}" in tail
    # the quantity is named: not "Best loss", which was the total loss at the best-KL epoch
    assert ("Final model: best validation KL 0.27 kT at epoch 58 (start 0.41 kT, \u221234 %) -> "
            "/runs/x/molecular_pt_300_450.pt") in tail
    assert "Best loss" not in tail and "-12.5" not in tail
    assert "Cost: 768,000 target energy evaluations, 0:02:05 training wall time" in tail
    assert "--resume" not in tail


def test_final_block_of_a_diverged_run_says_so_and_how_to_continue():
    rep, out, _ = reporter(tty=False)
    rep.emit(started())
    rep.emit(Finished(status="diverged", epoch=3, message="diverged at epoch 3: Fwd_E and Inv_E (both directions) "
                      "exploded", best_epoch=0, best_score=0.30, best_metric="validation KL", start_score=0.30,
                      verdict="diverged at epoch 3", resume_command="molpt-tui train --resume r --from best --lr 5e-3"))
    text = out.getvalue()
    assert "Training DIVERGED at epoch 3/200" in text and "Fwd_E and Inv_E (both directions)" in text
    assert "best validation KL 0.30 kT at epoch 0 (the untrained map" in text
    assert "To continue from the best weights with a lower LR: molpt-tui train --resume r --from best --lr 5e-3" in text


def test_test_set_results_are_the_final_claim_with_error_bars():
    from molpt_tui.training.events import TestEvaluation

    rep, out, _ = reporter(tty=False)
    rep.emit(started())
    common = dict(n_pairs=1000, acc_naive=0.131, acc_naive_se=0.011, ess_fwd=60.0, ess_fwd_se=3.0, ess_inv=55.0,
                  ess_inv_se=4.0, kl=0.31, kl_se=0.03, block=12, path="/d/q.test.npz")
    rep.emit(TestEvaluation(epoch=0, label="untrained", acc_flow=0.655, acc_flow_se=0.02, **common))
    rep.emit(TestEvaluation(epoch=58, label="final", acc_flow=0.812, acc_flow_se=0.015, **common))
    rep.emit(Finished(status="completed", epoch=60))
    text = out.getvalue()
    assert ("Test set, final model (epoch 58): flow-swap acceptance 0.812 \u00b1 0.015 vs naive "
            "0.131 \u00b1 0.011") in text
    summary = text[text.index("Training completed"):]
    assert ("Test set (1000 pairs, independent MD run): flow-swap acceptance 0.812 \u00b1 0.015 "
            "(untrained 0.655 \u00b1 0.020) vs naive 0.131 \u00b1 0.011") in summary
    assert "ESS fwd 60.0 \u00b1 3.0 % | inv 55.0 \u00b1 4.0 %" in summary


def test_the_summary_holds_the_checklist():
    rep, out, _ = reporter(tty=False)
    rep.emit(started(warmup_epochs=0))
    rep.emit(metrics(0))
    rep.emit(Finished(status="completed", epoch=0))
    text = out.getvalue()
    assert "Good signs:" in text
    assert "\u2714 initial loss below 1e15 kT (since epoch 0)" in text
    assert "\u2718 LR rising through the warmup (since epoch 0): no warmup" in text


def test_final_block_stopped_says_how_to_resume():
    rep, out, _ = reporter(tty=False)
    rep.emit(started())
    rep.emit(Finished(status="stopped", epoch=42, files=["/runs/x/last.pt"], message="Ctrl-C"))
    text = out.getvalue()
    assert "Training stopped at epoch 42/200" in text and "Ctrl-C" in text
    assert "molpt-tui train --resume '/runs/ala2 300-450'" in text


def test_step_progress_moves_the_tty_bar_within_an_epoch():
    from molpt_tui.training.events import StepProgress

    rep, _out, _ = reporter(tty=True)
    rep.emit(started(epochs=10, steps_per_epoch=20))
    for step in (5, 10, 15):
        rep.emit(StepProgress(epoch=1, step=step, steps_per_epoch=20, epochs=10, loss=2.5, fwd_energy=6.0,
                              inv_energy=-4.0, lr=1e-4, n_regularised=3, segment_steps=step, segment_seconds=step))
        assert rep._bar.n == step and rep._bar.total == 200
        assert "Loss=2.50" in rep._bar.postfix and "reg=3" in rep._bar.postfix
        assert rep._bar.desc.startswith("epoch 1/10")
    rep.emit(metrics(1))
    assert rep._bar.n == 20
    rep.close()


def test_step_progress_in_a_log_file_is_a_line_every_progress_interval():
    from molpt_tui.training.events import StepProgress

    rep, out, clock = reporter(tty=False, every=30.0)
    rep.emit(started(epochs=2, steps_per_epoch=100))
    rep.emit(metrics(0))
    for step in range(1, 101):
        clock.t += 1.0
        rep.emit(StepProgress(epoch=1, step=step, steps_per_epoch=100, epochs=2, loss=2.0, fwd_energy=6.0,
                              inv_energy=-4.0, lr=1e-4, segment_steps=step, segment_seconds=float(step)))
    text = out.getvalue()
    lines = [line for line in text.splitlines() if " step " in line]
    assert [line.split(" step ")[1].split("/")[0] for line in lines] == ["30", "60", "90"]
    assert "1.00 s/step" in lines[-1] and "ETA 0:01:50" in lines[-1]    # 10 + 100 steps left at 1 s
    assert "\r" not in text


def test_events_before_run_started_do_not_crash():
    rep, out, _ = reporter(tty=False)
    rep.emit(metrics(3))
    rep.emit(block(3))
    rep.emit(Finished(status="failed", epoch=3))
    text = out.getvalue()
    assert "Epoch 3\n" in text and "Training FAILED at epoch 3" in text
    assert "molpt-tui train --resume RUN_DIR" in text


def test_number_formats():
    assert fmt_num(1.23e13) == "1.230e+13"
    assert fmt_num(-42.126) == "-42.13"
    assert fmt_num(math.nan) == "nan" and fmt_num(-math.inf) == "-inf"
    assert fmt_prob(4e-10) == "4.00e-10" and fmt_prob(0.41) == "0.410"


def test_default_stream_is_stdout_and_non_tty_under_pytest_capture():
    code = ("import sys; from molpt_tui.report.console import ConsoleReporter as C; r = C();"
            "assert r.stream is sys.stdout and r.isatty is False;"
            "assert not any(m.startswith(('textual', 'rich')) for m in sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.PIPE)


def test_regularised_and_nonfinite_energy_counts_are_shown_not_hidden():
    import io

    from molpt_tui.report.console import ConsoleReporter
    from molpt_tui.training.events import EpochMetrics, LogBlock

    common = dict(loss=1.0, fwd_energy=1.0, fwd_logdet=1.0, inv_energy=1.0, inv_logdet=1.0, lr=1e-3)
    buf = io.StringIO()
    reporter = ConsoleReporter(buf, isatty=False)
    reporter.emit(EpochMetrics(epoch=3, n_regularised=4, n_nonfinite=1, **common))
    reporter.emit(LogBlock(epoch=3, improvement_pct=3.0, kl=0.5, kl_val=0.7, **common))
    reporter.emit(EpochMetrics(epoch=4, **common))
    reporter.emit(LogBlock(epoch=4, improvement_pct=3.0, **common))
    out = buf.getvalue()
    assert "1.00 kT   (4 regularised, 1 non-finite energies this epoch)" in out   # next to the loss
    assert out.count("regularised") == 2  # the epoch's progress line and its block; a clean epoch says nothing
    assert "train       0.50 kT | validation       0.70 kT" in out


def test_the_cost_of_a_data_parallel_run_says_it_counts_every_rank():
    import dataclasses

    rep, out, _ = reporter(tty=False)
    rep.emit(dataclasses.replace(started(), world_size=4, dist_backend="gloo"))
    rep.emit(Finished(status="completed", epoch=200, energy_evals=768000, elapsed_s=125.0))
    assert "Cost: 768,000 target energy evaluations (all 4 ranks), 0:02:05 training wall time" in out.getvalue()
