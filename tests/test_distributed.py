"""Data-parallel training: ranks from the launcher's environment, the reductions, agreed stops,
and real runs of two CPU ranks over gloo (torchrun, and the same environment set by hand so
that each rank's exit status can be seen)."""
from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from molpt_tui.errors import UserError
from molpt_tui.training.control import TrainingControl
from molpt_tui.training.distributed import (
    Distributed,
    RankInfo,
    check_world_size,
    checkpoint_world_size,
    rank_info,
    record_ranks,
    slurm_tasks_on_node,
)
from molpt_tui.training.losses import DirectionTerms

# --- ranks from the environment ------------------------------------------------------------------


def test_torchrun_environment() -> None:
    env = {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "node1",
           "MASTER_PORT": "29400", "SLURM_PROCID": "0", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "4"}
    assert rank_info(env) == RankInfo(3, 8, 1, 2, "torchrun", "node1", 29400)


def test_srun_environment_when_torchrun_s_is_absent() -> None:
    env = {"SLURM_STEP_ID": "0", "SLURM_PROCID": "5", "SLURM_STEP_NUM_TASKS": "8", "SLURM_NTASKS": "16",
           "SLURM_LOCALID": "1", "SLURM_NODEID": "2", "SLURM_STEP_TASKS_PER_NODE": "2(x3),1", "MASTER_ADDR": "n0"}
    assert rank_info(env) == RankInfo(5, 8, 1, 2, "srun", "n0", 29500)
    del env["SLURM_STEP_NUM_TASKS"]
    assert rank_info(env).world_size == 16


def test_the_batch_script_itself_is_one_process() -> None:
    # sbatch --ntasks=4 sets SLURM_NTASKS in the script, where no other rank will ever start
    assert rank_info({"SLURM_NTASKS": "4", "SLURM_JOB_ID": "1"}) == RankInfo()
    assert rank_info({}) == RankInfo() and not Distributed(rank_info({})).active


@pytest.mark.parametrize("text, node, expected", [("4(x2),2", 0, 4), ("4(x2),2", 1, 4), ("4(x2),2", 2, 2),
                                                  ("3", 0, 3), ("junk", 0, 1), ("2", 5, 1)])
def test_tasks_per_node(text: str, node: int, expected: int) -> None:
    assert slurm_tasks_on_node(text, node) == expected


def test_a_checkpoint_resumes_only_with_its_world_size() -> None:
    one: dict[str, object] = {"epoch": 3}
    two = record_ranks(one, 2, 16)
    assert checkpoint_world_size(one) == 1 and checkpoint_world_size(two) == 2
    assert two["distributed"] == {"world_size": 2, "batch_size_per_rank": 16} and "distributed" not in one
    check_world_size(two, "run/last.pt", 2)
    check_world_size(one, "run/last.pt", 1)
    with pytest.raises(UserError, match=r"^run/last\.pt: this run was trained with 2 ranks and this is one process; "
                                        r"resume it with 2 ranks \(torchrun --nproc-per-node 2"):
        check_world_size(two, "run/last.pt", 1)
    with pytest.raises(UserError, match=r"trained with one process and this is 4 ranks; resume it without torchrun"):
        check_world_size(one, "run/last.pt", 4)


def _terms(values: list[float], threshold: float = 1e9) -> DirectionTerms:
    from molpt_tui.training.losses import direction_term

    e = torch.tensor(values, dtype=torch.float64, requires_grad=True)
    return direction_term(e, torch.zeros_like(e), threshold)


def test_one_process_is_left_exactly_as_it_was() -> None:
    d = Distributed()
    fwd, inv = _terms([1.0, 2.0]), _terms([3.0])
    assert d.reduce_terms(fwd, inv, 0.5, 2) == (fwd, inv, 0.5)
    assert d.reduce_sums([1.0, 2.0]) == [1.0, 2.0] and not d.agree(False) and d.agree(True)
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.full((2,), 3.0)
    d.all_reduce_grads([p])
    assert p.grad.tolist() == [3.0, 3.0]
    control = TrainingControl()
    served: list[int] = []
    assert not d.between_steps(control, lambda: served.append(1), lambda: None) and served == [1]
    control.request_stop("x")
    assert d.between_steps(control, lambda: None, lambda: None)


# --- two gloo ranks in one test (torch.multiprocessing) --------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _collectives(rank: int, port: int, out: str) -> None:
    """One of two ranks: reduce known numbers and report what came back."""
    torch.set_num_threads(1)
    d = Distributed(RankInfo(rank, 2, rank, 2, "test", "127.0.0.1", port))
    d.start(torch.device("cpu"))
    result: dict[str, object] = {}
    try:
        # rank 0: energies 1, 2, inf (one non-finite); rank 1: 4 and 5 (and 6 above the threshold)
        fwd = _terms([1.0, 2.0, math.inf] if rank == 0 else [4.0, 5.0, 6.0], threshold=5.5)
        inv = _terms([10.0, 20.0, 30.0] if rank == 0 else [40.0, 50.0, 60.0])
        g_fwd, g_inv, ref = d.reduce_terms(fwd, inv, 1.0 + rank, 3)
        result["fwd"] = [float(g_fwd.loss), g_fwd.mean_energy, g_fwd.n_regularised, g_fwd.n_nonfinite]
        result["inv"] = [float(g_inv.loss), g_inv.mean_energy]
        result["ref"] = ref
        # gradients are averaged over the ranks
        p = torch.nn.Parameter(torch.zeros(3))
        p.grad = torch.full((3,), float(rank + 1))
        d.all_reduce_grads([p])
        result["grads"] = [p.grad.tolist()]
        # a stop that only rank 1 received reaches rank 0 at the same boundary
        control = TrainingControl()
        if rank == 1:
            d.note_signal("SIGTERM")
            control.request_stop("received SIGTERM")
        result["stopped"] = d.between_steps(control, lambda: None, lambda: None)
        result["reason"] = control.stop_reason
        result["stop_signal"] = d.stop_signal
        # a checkpoint asked of rank 1 is taken by rank 0; rank 0 pauses and the other waits
        control = TrainingControl()
        if rank == 1:
            d.note_checkpoint()
        else:
            control.pause()
        t0 = time.monotonic()
        resumed = []

        def service() -> None:
            if rank == 0 and time.monotonic() - t0 > 0.6 and not resumed:
                control.resume()
                resumed.append(1)

        result["stopped_again"] = d.between_steps(control, service, lambda: None)
        result["waited"] = time.monotonic() - t0
        result["checkpoint"] = control.take_checkpoint_request() is not None
    finally:
        d.close()
    Path(out, f"rank{rank}.json").write_text(json.dumps(result))


def test_two_ranks_reduce_sums_and_counts_and_agree(tmp_path: Path) -> None:
    import torch.multiprocessing as tmp

    tmp.spawn(_collectives, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    # forward: finite energies 1, 2 | 4, 5, 6 with 6 above 5.5 (linlogcut: 5.5 + log1p(0.5))
    cut = 5.5 + math.log1p(0.5)
    assert r0["fwd"][0] == pytest.approx((1 + 2 + 4 + 5 + cut) / 5, rel=1e-12)
    assert r0["fwd"][1] == pytest.approx((1 + 2 + 4 + 5 + 6) / 5, rel=1e-12)
    assert r0["fwd"][2:] == [1, 1]           # one regularised, one non-finite, over both ranks
    assert r0["inv"] == pytest.approx([35.0, 35.0], rel=1e-12)
    assert r0["ref"] == pytest.approx(1.5)   # the mean of the ranks' references (equal batches)
    assert r0["fwd"] == r1["fwd"] and r0["inv"] == r1["inv"]
    assert r0["grads"] == r1["grads"] == [[1.5, 1.5, 1.5]]
    assert r0["stopped"] and r1["stopped"]
    assert r0["reason"] == "received SIGTERM on another rank" and r0["stop_signal"] == "SIGTERM"
    assert not r0["stopped_again"] and not r1["stopped_again"]
    assert r1["waited"] >= 0.5               # rank 1 waited while rank 0 was paused
    assert r0["checkpoint"] and not r1["checkpoint"]


def _weighted_gradient(rank: int, port: int, out: str) -> None:
    """Each rank's loss gradient, once reduced, is the gradient of the mean over all samples."""
    torch.set_num_threads(1)
    d = Distributed(RankInfo(rank, 2, rank, 2, "test", "127.0.0.1", port))
    d.start(torch.device("cpu"))
    try:
        w = torch.nn.Parameter(torch.tensor(1.0, dtype=torch.float64))
        x = torch.tensor([1.0, 2.0, 3.0] if rank == 0 else [4.0, 0.0, 0.0], dtype=torch.float64)
        # two configurations rank 1 could not evaluate: +inf with no gradient, as engines give them
        finite = torch.tensor([True, True, True] if rank == 0 else [True, False, False])
        e = torch.where(finite, w * x, torch.tensor(math.inf, dtype=torch.float64))
        fwd = DirectionTerms(*_direction(e))
        inv = DirectionTerms(*_direction(w * torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)))
        g_fwd, g_inv, _ = d.reduce_terms(fwd, inv, 0.0, 3)
        torch.autograd.backward(g_fwd.loss + g_inv.loss)
        d.all_reduce_grads([w])
        assert w.grad is not None
        Path(out, f"rank{rank}.json").write_text(json.dumps([float(w.grad), float(g_fwd.loss.detach())]))
    finally:
        d.close()


def _direction(e: torch.Tensor) -> tuple[torch.Tensor, float, float, int, int]:
    from molpt_tui.training.losses import direction_term

    t = direction_term(e, torch.zeros_like(e), 1e9)
    return t.loss, t.mean_energy, t.mean_logdet, t.n_regularised, t.n_nonfinite


def test_the_reduced_gradient_is_that_of_the_global_mean(tmp_path: Path) -> None:
    import torch.multiprocessing as tmp

    tmp.spawn(_weighted_gradient, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    # the forward mean over the 4 finite samples is w*(1+2+3+4)/4 = 2.5, d/dw 2.5; the inverse adds 1
    assert r0 == r1 == pytest.approx([3.5, 2.5])


# --- real runs: two CPU ranks -------------------------------------------------------------------

TINY_DATA = ["data.n_samples=300", "data.stride=10", "data.swap_every=10", "data.equilibration_ps=0.5"]
TINY_TRAIN = ["model.hidden=16", "model.n_layers=2", "logging.eval_samples=32", "energy.engine=openmm",
              "energy.platform=Reference", "training.steps_per_epoch=3", "training.warmup_epochs=1",
              "logging.eval_interval=1"]


def _sets(items: list[str]) -> list[str]:
    return [a for item in items for a in ("--set", item)]


@pytest.fixture(scope="module")
def ddp_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ddp_data") / "data.npz"
    out = subprocess.run([sys.executable, "-m", "molpt_tui", "simulate", "--preset", "quickstart", "--out", str(path),
                          *_sets(TINY_DATA)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return path


def _train_args(run: Path, data: Path, *extra: str, batch: int = 16, epochs: int = 3) -> list[str]:
    return ["train", "--preset", "quickstart", "--no-ui", "--out", str(run), "--batch-size", str(batch),
            "--epochs", str(epochs), *_sets(TINY_DATA + TINY_TRAIN + [f"data.path={data}"]), *extra]


def _rank_env(rank: int, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(port), OMP_NUM_THREADS="1", NO_COLOR="1", **extra)
    return env


def _launch(args: list[str], logs: Path, **extra: str) -> list[subprocess.Popen[str]]:
    """What torchrun does for two ranks on one node, with each rank's exit status to see."""
    port = _free_port()
    procs = []
    for rank in (0, 1):
        log = (logs / f"rank{rank}.log").open("w")
        procs.append(subprocess.Popen([sys.executable, "-m", "molpt_tui", *args], env=_rank_env(rank, port, **extra),
                                      stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                                      start_new_session=True))
        log.close()
    return procs


def _wait(procs: list[subprocess.Popen[str]], logs: Path, timeout: float = 600) -> list[int]:
    try:
        return [p.wait(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)


def _output(logs: Path) -> str:
    return "\n".join((logs / f"rank{r}.log").read_text()[-3000:] for r in (0, 1) if (logs / f"rank{r}.log").exists())


def _events(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines(keepends=True)
            if line.endswith("\n") and line.strip()]
    return [r for r in rows if "kind" in r]


def _epochs(run: Path) -> dict[int, dict]:
    return {e["epoch"]: e for e in _events(run) if e["kind"] == "epoch"}


@pytest.fixture(scope="module")
def ddp_run(ddp_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two ranks under torchrun itself, batch 16 each, 3 epochs."""
    work = tmp_path_factory.mktemp("ddp_run")
    run = work / "run"
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                          "--master-port", str(_free_port()), "-m", "molpt_tui", *_train_args(run, ddp_data)],
                         capture_output=True, text=True, timeout=900, cwd=work,
                         env={k: v for k, v in os.environ.items() if not k.startswith("SLURM_")})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return run


@pytest.mark.integration
def test_two_ranks_train_and_only_rank_0_writes(ddp_run: Path) -> None:
    events = _events(ddp_run)
    started = [e for e in events if e["kind"] == "run_started"]
    assert len(started) == 1, "every rank wrote the log"
    assert started[0]["world_size"] == 2 and started[0]["dist_backend"] == "gloo"
    assert started[0]["batch_size"] == 16 and started[0]["steps_per_epoch"] == 3
    assert events[-1]["kind"] == "finished" and events[-1]["status"] == "completed"
    assert sorted(_epochs(ddp_run)) == [0, 1, 2, 3]
    ckpt = torch.load(ddp_run / "last.pt", weights_only=True)
    assert ckpt["distributed"] == {"world_size": 2, "batch_size_per_rank": 16} and ckpt["epoch"] == 3
    assert not (ddp_run / ".lock").exists()


@pytest.mark.integration
def test_two_ranks_give_what_one_process_gives_on_the_same_pairs(ddp_run: Path, ddp_data: Path,
                                                                  tmp_path: Path) -> None:
    # One process with batch 32 sees, each step, exactly the pairs the two ranks of 16 see
    # together (rank r: the r-th half of the same 32 positions of the same permutation).
    one = tmp_path / "one"
    out = subprocess.run([sys.executable, "-m", "molpt_tui", *_train_args(one, ddp_data, batch=32)],
                         capture_output=True, text=True, timeout=600,
                         env={k: v for k, v in os.environ.items() if not k.startswith("SLURM_")})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    two_epochs, one_epochs = _epochs(ddp_run), _epochs(one)
    for epoch in (1, 2, 3):
        for key in ("loss", "fwd_energy", "fwd_logdet", "inv_energy", "inv_logdet", "kl", "grad_norm"):
            a, b = two_epochs[epoch][key], one_epochs[epoch][key]
            assert a == pytest.approx(b, rel=1e-4, abs=1e-5), (epoch, key, a, b)
        assert two_epochs[epoch]["n_nonfinite"] == one_epochs[epoch]["n_nonfinite"]
    # the held-out evaluation of the same weights gives the same numbers
    blocks_two = {e["epoch"]: e for e in _events(ddp_run) if e["kind"] == "log_block"}
    blocks_one = {e["epoch"]: e for e in _events(one) if e["kind"] == "log_block"}
    for key in ("acc_flow", "acc_naive", "ess_fwd", "ess_inv", "kl_val"):
        assert blocks_two[0][key] == blocks_one[0][key]
        assert blocks_two[3][key] == pytest.approx(blocks_one[3][key], rel=1e-3, abs=1e-4)
    # The recorded cost is that of both ranks: their steps of 16 pairs cost what one process's
    # steps of 32 cost, and each rank evaluates the whole validation split, so every held-out
    # evaluation costs exactly twice what it costs one process.
    for epoch in (0, 1, 2, 3):
        assert two_epochs[epoch]["energy_evals"] == one_epochs[epoch]["energy_evals"] > 0, epoch

    def evaluation_cost(epochs: dict[int, dict], blocks: dict[int, dict], epoch: int) -> int:
        return int(blocks[epoch]["energy_evals_total"] - epochs[epoch]["energy_evals_total"])

    one_cost = evaluation_cost(one_epochs, blocks_one, 1)
    assert one_cost > 0
    for epoch in (1, 2, 3):
        assert evaluation_cost(two_epochs, blocks_two, epoch) == 2 * evaluation_cost(one_epochs, blocks_one, epoch)
    finished_two, finished_one = (next(e for e in _events(run) if e["kind"] == "finished") for run in (ddp_run, one))
    assert finished_two["energy_evals"] == two_epochs[3]["energy_evals_total"] + 2 * one_cost  # epoch 3's evaluation
    assert finished_two["energy_evals"] - finished_one["energy_evals"] == len(blocks_one) * one_cost
    assert any(e["kind"] == "message" and "counted over all 2 ranks" in e["text"] for e in _events(ddp_run))


@pytest.mark.integration
def test_resume_with_the_same_world_size_is_exact(ddp_run: Path, ddp_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert _wait(_launch(_train_args(run, ddp_data, epochs=1), tmp_path), tmp_path) == [0, 0], _output(tmp_path)
    resume = ["train", "--resume", str(run), "--no-ui", "--epochs", "3"]
    assert _wait(_launch(resume, tmp_path), tmp_path) == [0, 0], _output(tmp_path)
    straight, resumed = _epochs(ddp_run), _epochs(run)
    for epoch in (2, 3):
        for key in ("loss", "fwd_energy", "inv_energy", "kl", "grad_norm", "lr"):
            assert resumed[epoch][key] == straight[epoch][key], (epoch, key)
    a = torch.load(ddp_run / "last.pt", weights_only=True)["model"]
    b = torch.load(run / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)

    # another world size is refused, before anything is written
    before = (run / "metrics.jsonl").read_text()
    out = subprocess.run([sys.executable, "-m", "molpt_tui", "train", "--resume", str(run), "--no-ui", "--epochs", "4"],
                         capture_output=True, text=True, timeout=300,
                         env={k: v for k, v in os.environ.items() if not k.startswith("SLURM_")})
    assert out.returncode == 2
    assert "this run was trained with 2 ranks and this is one process" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert (run / "metrics.jsonl").read_text() == before


@pytest.mark.integration
def test_a_one_process_checkpoint_is_refused_by_two_ranks(ddp_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    out = subprocess.run([sys.executable, "-m", "molpt_tui", *_train_args(run, ddp_data, epochs=1)],
                         capture_output=True, text=True, timeout=600,
                         env={k: v for k, v in os.environ.items() if not k.startswith("SLURM_")})
    assert out.returncode == 0, out.stderr[-2000:]
    codes = _wait(_launch(["train", "--resume", str(run), "--no-ui", "--epochs", "2"], tmp_path), tmp_path)
    assert codes == [2, 2], _output(tmp_path)
    assert "trained with one process and this is 2 ranks" in (tmp_path / "rank0.log").read_text()


@pytest.mark.integration
@pytest.mark.parametrize("sig, to_rank, slurm, code", [("SIGTERM", 1, False, 143), ("SIGUSR1", 0, True, 75)])
def test_a_signal_to_one_rank_stops_all_of_them_with_a_checkpoint(ddp_data: Path, tmp_path: Path, sig: str,
                                                                  to_rank: int, slurm: bool, code: int) -> None:
    run = tmp_path / "run"
    extra = {"SLURM_JOB_ID": "77"} if slurm else {}
    procs = _launch(_train_args(run, ddp_data, epochs=1000), tmp_path, **extra)
    try:
        deadline = time.monotonic() + 300
        while not (run / "metrics.jsonl").is_file() or 1 not in _epochs(run):
            assert all(p.poll() is None for p in procs), _output(tmp_path)
            assert time.monotonic() < deadline, "no epoch 1 in time:\n" + _output(tmp_path)
            time.sleep(0.1)
        procs[to_rank].send_signal(getattr(signal, sig))
        codes = _wait(procs, tmp_path, timeout=180)
    finally:
        _wait(procs, tmp_path, timeout=1)
    assert codes == [code, code], _output(tmp_path)
    events = _events(run)
    finished = events[-1]
    assert finished["kind"] == "finished" and finished["status"] == "stopped"
    if to_rank == 1:
        assert finished["message"] == f"received {sig} on another rank"
    ckpt = torch.load(run / "last.pt", weights_only=True)
    assert ckpt["epoch"] == finished["epoch"] >= 1
