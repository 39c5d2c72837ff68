"""Bad input, through the real command line: exit 2, one line on stderr, nothing touched.

Every case runs `python -m molpt_tui ...` in a subprocess, as a user would, and checks that

- the exit status is 2,
- stderr is exactly one line, `molpt-tui: error: ...`, naming the file and/or key at fault,
- there is no traceback anywhere,
- no file in the directories involved (run directories, data, fixtures, the working directory)
  was changed, removed or added: every file is hashed before and after.

The inputs are in tests/bad_inputs/ (TOML presets, PDB files) or are made here from a real tiny
run: corrupt and truncated checkpoints, checkpoints of another model or system, data of another
system. A module fixture simulates the data and trains three one-epoch runs once.
"""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
BAD = Path(__file__).resolve().parent / "bad_inputs"
STRUCTURES = ROOT / "molpt_tui" / "presets" / "structures"

TINY_DATA = ["data.n_samples=200", "data.stride=10", "data.swap_every=10", "data.equilibration_ps=0.5"]
TINY_TRAIN = ["training.steps_per_epoch=1", "training.batch_size=16", "logging.eval_samples=16",
              "model.hidden=16", "model.n_layers=2", "energy.engine=openmm", "energy.platform=Reference"]


def sets(items) -> list[str]:
    return [arg for item in items for arg in ("--set", str(item))]


def cli(args, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "molpt_tui", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL, env=dict(os.environ, NO_COLOR="1"))


def snapshot(dirs) -> dict[str, str]:
    """sha256 of every file (dot files included) under each directory."""
    out = {}
    for d in dirs:
        d = Path(d)
        if not d.exists():
            continue
        for path in sorted(p for p in d.rglob("*") if p.is_file()):
            out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@dataclass
class Corpus:
    root: Path
    data: Path           # alanine dipeptide, 300/367.4/450 K
    aa_data: Path        # Ala-Ala: another system
    run: Path            # a finished one-epoch run (model.hidden = 16)
    other_model: Path    # the same system, model.hidden = 24
    other_system: Path   # an Ala-Ala run


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Corpus:
    from molpt_tui.config import load_config
    from molpt_tui.physics.data import simulate

    root = tmp_path_factory.mktemp("bad_inputs")
    quiet = {"progress": False, "log": lambda *_: None}
    data = root / "data" / "ala2.npz"
    aa_data = root / "data" / "ala_ala.npz"
    aa_pdb = f"system.pdb={STRUCTURES / 'ala_ala.pdb'}"
    simulate(load_config("quickstart", TINY_DATA + [f"data.path={data}"]), **quiet)
    simulate(load_config("quickstart", TINY_DATA + [f"data.path={aa_data}", aa_pdb, "data.n_samples=60"]), **quiet)
    runs = {
        "run": [f"data.path={data}"],
        "other_model": [f"data.path={data}", "model.hidden=24"],
        "other_system": [f"data.path={aa_data}", aa_pdb, "data.n_samples=60"],
    }
    procs = {name: subprocess.Popen(
        [sys.executable, "-m", "molpt_tui", "train", "--preset", "quickstart", "--no-ui", "--epochs", "1",
         "--out", str(root / name), *sets(TINY_DATA + TINY_TRAIN + extra)],
        cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for name, extra in runs.items()}
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=900)  # three at once on a shared 2-core machine
        assert proc.returncode == 0, f"{name}: {err[-3000:]}"
        assert (root / name / "last.pt").is_file()
    return Corpus(root, data, aa_data, root / "run", root / "other_model", root / "other_system")


@dataclass
class Case:
    args: list
    expect: tuple[str, ...]                              # each must appear in the error line
    watch: list[Path] = field(default_factory=list)      # directories that must not change
    absent: list[Path] = field(default_factory=list)     # paths that must not appear


CASES = {}


def case(fn):
    CASES[fn.__name__] = fn
    return fn


def _preset_case(name: str, *expect: str):
    def make(c: Corpus, tmp: Path) -> Case:
        out = tmp / "run"
        return Case(["train", "--preset", BAD / name, "--no-ui", "--out", out, *sets([f"data.path={c.data}"])],
                    (name, *expect), absent=[out])
    make.__name__ = name.removesuffix(".toml")
    CASES[make.__name__] = make


# --- presets: syntax, keys, types, values, files -------------------------------------------------
_preset_case("malformed.toml", "not valid TOML", "line 2")
_preset_case("unknown_key.toml", "training.learning_rate", "unknown key", "did you mean 'lr'?")
_preset_case("unknown_section.toml", "trainig", "did you mean 'training'?")
_preset_case("string_for_int.toml", "training.epochs", "expected an integer", "'ten'")
_preset_case("list_for_float.toml", "training.lr", "expected a number")
_preset_case("bool_for_string.toml", "system.name", "expected a string")
_preset_case("negative_lr.toml", "training.lr", "-0.001 is not allowed")
_preset_case("batch_zero.toml", "training.batch_size", "0 is not allowed")
_preset_case("epochs_zero.toml", "training.epochs", "0 is not allowed")
_preset_case("cold_above_hot.toml", "temperatures.cold", "must be below hot")
_preset_case("cold_equals_hot.toml", "temperatures.cold", "must be below hot")
_preset_case("ladder_without_hot.toml", "temperatures.ladder", "must contain")
_preset_case("missing_pdb.toml", "system.pdb", "no_such_structure.pdb")
_preset_case("unknown_forcefield.toml", "system.forcefield", "no_such_forcefield.xml")


@case
def corrupt_pdb(c, tmp):
    out = tmp / "run"
    return Case(["train", "--preset", BAD / "corrupt_pdb.toml", "--no-ui", "--out", out,
                 *sets([f"data.path={c.data}"])],
                ("garbage.pdb", "not a readable PDB file"), absent=[out])


@case
def pdb_the_force_field_cannot_parametrise(c, tmp):
    out = tmp / "run"
    return Case(["train", "--preset", BAD / "unparametrisable_pdb.toml", "--no-ui", "--out", out,
                 *sets([f"data.path={c.data}"])],
                ("unknown_residue.pdb", "amber99sbildn.xml", "cannot parametrise", "XYZ"), absent=[out])


@case
def unknown_preset_name(c, tmp):
    return Case(["train", "--preset", "no_such_preset", "--no-ui", "--out", tmp / "run"],
                ("--preset", "no_such_preset"), absent=[tmp / "run"])


@case
def misspelt_preset_name(c, tmp):
    return Case(["simulate", "--preset", "quikstart"], ("quikstart", "did you mean 'quickstart'?"))


@case
def missing_preset_file(c, tmp):
    return Case(["train", "--preset", tmp / "nowhere" / "mine.toml", "--no-ui"], ("mine.toml", "not found"))


@case
def preset_flag_without_a_name(c, tmp):
    return Case(["train", "--preset"], ("--preset", "expected one argument"))


# --- --set ------------------------------------------------------------------------------------------
@case
def set_without_equals(c, tmp):
    return Case(["train", "--no-ui", "--set", "training.lr", "--out", tmp / "run"],
                ("--set training.lr", "section.key=value"), absent=[tmp / "run"])


@case
def set_unknown_key(c, tmp):
    return Case(["train", "--no-ui", "--set", "training.lrr=1e-4", "--out", tmp / "run"],
                ("--set", "training.lrr", "did you mean 'lr'?"), absent=[tmp / "run"])


@case
def set_without_section(c, tmp):
    return Case(["simulate", "--set", "lr=1e-4"], ("--set", "lr", "section.key"))


@case
def set_string_for_int(c, tmp):
    return Case(["train", "--no-ui", "--set", "training.epochs=ten", "--out", tmp / "run"],
                ("--set", "training.epochs", "expected an integer"), absent=[tmp / "run"])


@case
def set_float_for_int(c, tmp):
    return Case(["train", "--no-ui", "--set", "training.batch_size=1.5", "--out", tmp / "run"],
                ("--set", "training.batch_size", "expected an integer"), absent=[tmp / "run"])


@case
def compile_flow_without_splines(c, tmp):
    return Case(["train", "--no-ui", "--out", tmp / "run",
                 *sets([f"data.path={c.data}", "model.transform=affine", "training.compile_flow=true"])],
                ("training.compile_flow", "model.transform", "affine"), absent=[tmp / "run"])


@case
def set_value_out_of_range_is_blamed_on_set(c, tmp):
    return Case(["simulate", "--set", "data.n_samples=5", "--out", tmp / "d.npz"],
                ("--set", "data.n_samples", "5 is not allowed"), absent=[tmp / "d.npz"])


@case
def set_missing_pdb_is_relative_to_cwd(c, tmp):
    return Case(["simulate", "--set", "system.pdb=mine.pdb", "--out", tmp / "d.npz"],
                ("--set", "system.pdb", "mine.pdb", "current directory"), absent=[tmp / "d.npz"])


@case
def flag_of_wrong_type(c, tmp):
    return Case(["train", "--no-ui", "--epochs", "ten"], ("--epochs", "invalid int value"))


# --- checkpoints ----------------------------------------------------------------------------------
def _run_copy(c: Corpus, tmp: Path, source: Path | None = None) -> Path:
    run = tmp / "run"
    shutil.copytree(source or c.run, run)
    return run


@case
def corrupt_checkpoint(c, tmp):
    run = _run_copy(c, tmp)
    (run / "last.pt").write_bytes(np.random.default_rng(0).bytes(50_000))
    return Case(["train", "--resume", run, "--no-ui", "--epochs", "2"], ("last.pt", "corrupt or unreadable"),
                watch=[run])


@case
def truncated_checkpoint(c, tmp):
    run = _run_copy(c, tmp)
    data = (run / "last.pt").read_bytes()
    (run / "last.pt").write_bytes(data[: len(data) // 2])
    return Case(["train", "--resume", run, "--no-ui", "--epochs", "2"], ("last.pt", "truncated"), watch=[run])


@case
def checkpoint_of_another_model(c, tmp):
    run = _run_copy(c, tmp)
    shutil.copy(c.other_model / "last.pt", run / "last.pt")
    return Case(["train", "--resume", run, "--no-ui", "--epochs", "2"], ("last.pt", "model.hidden", "24"),
                watch=[run])


@case
def resume_with_another_model(c, tmp):
    # The saved config.toml drives --resume; an override that changes the architecture must not
    # be written into it (that would break every later resume) nor reach load_state_dict.
    run = _run_copy(c, tmp)
    return Case(["train", "--resume", run, "--no-ui", "--epochs", "2", "--set", "model.hidden=32"],
                ("last.pt", "model.hidden", "32"), watch=[run])


@case
def checkpoint_of_another_system(c, tmp):
    run = _run_copy(c, tmp)
    shutil.copy(c.other_system / "last.pt", run / "last.pt")
    return Case(["train", "--resume", run, "--no-ui", "--epochs", "2"], ("last.pt", "another system", "ala_ala"),
                watch=[run])


@case
def not_a_checkpoint(c, tmp):
    run = _run_copy(c, tmp)
    shutil.copy(c.data, run / "last.pt")  # a valid file of another kind
    return Case(["train", "--resume", run, "--no-ui", "--epochs", "2"], ("last.pt",), watch=[run])


@case
def resume_a_finished_run_without_more_epochs(c, tmp):
    run = _run_copy(c, tmp)
    return Case(["train", "--resume", run, "--no-ui"], ("last.pt", "already at epoch 1 of 1", "--epochs"),
                watch=[run])


# --- data -----------------------------------------------------------------------------------------
@case
def data_of_another_system(c, tmp):
    out = tmp / "run"
    return Case(["train", "--no-ui", "--out", out, *sets(TINY_TRAIN + [f"data.path={c.aa_data}"])],
                ("ala_ala.npz", "another system", "23 atoms"), absent=[out])


@case
def data_with_another_atom_count(c, tmp):
    # A file in the right format for a made-up 10-atom molecule.
    path = tmp / "data" / "ten_atoms.npz"
    path.parent.mkdir()
    meta = {"format": "molpt-tui.replica-data", "version": 1, "pdb": "ten_atoms.pdb"}
    np.savez(path, positions=np.zeros((3, 40, 10, 3), np.float32), temperatures=np.array([300.0, 367.4, 450.0]),
             potential_energy=np.zeros((3, 40)), atom_names=np.array([f"C{i}" for i in range(10)]),
             residue_names=np.array(["UNK"] * 10), swap_acceptance=np.zeros(2), swap_attempts=np.zeros(2, int),
             meta=np.array(repr(meta)))
    out = tmp / "run"
    return Case(["train", "--no-ui", "--out", out, *sets(TINY_TRAIN + [f"data.path={path}"])],
                ("ten_atoms.npz", "another system", "10 atoms"), watch=[path.parent], absent=[out])


@case
def corrupt_data_file(c, tmp):
    path = tmp / "data" / "corrupt.npz"
    path.parent.mkdir()
    path.write_bytes(c.data.read_bytes()[:3000] + np.random.default_rng(1).bytes(3000))
    out = tmp / "run"
    return Case(["train", "--no-ui", "--out", out, *sets(TINY_TRAIN + [f"data.path={path}"])],
                ("corrupt.npz", "unreadable data file"), watch=[path.parent], absent=[out])


@case
def data_without_the_hot_temperature(c, tmp):
    out = tmp / "run"
    return Case(["train", "--no-ui", "--out", out,
                 *sets(TINY_TRAIN + [f"data.path={c.data}", "temperatures.hot=500",
                                     "temperatures.ladder=[300.0, 500.0]"])],
                ("ala2.npz", "no samples at 500 K"), absent=[out])


@case
def simulate_over_existing_data(c, tmp):
    return Case(["simulate", "--out", c.data, *sets(TINY_DATA)], ("ala2.npz", "exists", "--force"))


# --- run directories ------------------------------------------------------------------------------
@case
def output_directory_under_a_file(c, tmp):
    # Root ignores permission bits, so "unwritable" is a path whose parent is a regular file.
    blocker = tmp / "outputs"
    blocker.write_text("a file, not a directory\n")
    return Case(["train", "--no-ui", "--out", blocker / "run", *sets(TINY_TRAIN + [f"data.path={c.data}"])],
                ("outputs/run", "cannot write the run directory"), watch=[tmp])


@case
def non_empty_run_dir_without_resume_or_force(c, tmp):
    run = _run_copy(c, tmp)
    return Case(["train", "--no-ui", "--out", run, *sets(TINY_TRAIN + [f"data.path={c.data}"])],
                (str(run), "not empty", "--resume", "--force"), watch=[run])


@case
def resume_without_last_pt(c, tmp):
    run = _run_copy(c, tmp)
    (run / "last.pt").unlink()
    return Case(["train", "--resume", run, "--no-ui", "--epochs", "2"], (str(run), "no last.pt"), watch=[run])


@case
def resume_of_a_directory_that_is_no_run(c, tmp):
    empty = tmp / "empty"
    empty.mkdir()
    return Case(["train", "--resume", empty, "--no-ui"], (str(empty), "config.toml"), watch=[empty])


@case
def run_dir_locked_by_a_live_trainer(c, tmp):
    run = _run_copy(c, tmp)
    (run / ".lock").write_text(f"{os.getpid()}\n")  # this test process: certainly alive
    return Case(["train", "--resume", run, "--no-ui", "--epochs", "2"], (str(run), f"PID {os.getpid()}"),
                watch=[run])


@case
def force_on_a_locked_run_dir_deletes_nothing(c, tmp):
    run = _run_copy(c, tmp)
    (run / ".lock").write_text(f"{os.getpid()}\n")
    return Case(["train", "--no-ui", "--force", "--out", run, *sets(TINY_TRAIN + [f"data.path={c.data}"])],
                (str(run), f"PID {os.getpid()}"), watch=[run])


# --- devices ----------------------------------------------------------------------------------------
@case
def cuda_on_a_cpu_only_machine(c, tmp):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp / "run"
    return Case(["train", "--no-ui", "--device", "cuda", "--out", out, *sets(TINY_TRAIN + [f"data.path={c.data}"])],
                ("--device cuda", "CUDA is not available"), absent=[out])


@case
def unknown_device(c, tmp):
    out = tmp / "run"
    return Case(["train", "--no-ui", "--device", "tpu", "--out", out, *sets(TINY_TRAIN + [f"data.path={c.data}"])],
                ("--device tpu", "not a device"), absent=[out])


# --- plot, watch, check-energy ------------------------------------------------------------------
@case
def plot_without_metrics(c, tmp):
    empty = tmp / "empty"
    empty.mkdir()
    return Case(["plot", empty], (str(empty), "metrics.jsonl"), watch=[empty])


@case
def watch_a_file(c, tmp):
    # a directory without metrics.jsonl is not bad input: watch waits for the run to start there
    path = tmp / "notes.txt"
    path.write_text("not a run\n")
    return Case(["watch", path], (str(path), "not a directory"), watch=[tmp])


@case
def watch_without_a_terminal(c, tmp):
    empty = tmp / "empty"
    empty.mkdir()
    return Case(["watch", empty], ("not a TTY", "molpt-tui plot"), watch=[empty])


@case
def check_energy_missing_pdb(c, tmp):
    return Case(["check-energy", "--pdb", tmp / "absent.pdb"], ("absent.pdb", "not found"))


@case
def check_energy_corrupt_pdb(c, tmp):
    return Case(["check-energy", "--pdb", BAD / "garbage.pdb"], ("garbage.pdb", "not a readable PDB file"))


@case
def check_energy_zero_samples(c, tmp):
    return Case(["check-energy", "--pdb", STRUCTURES / "alanine_dipeptide.pdb", "--samples", "0"], ("--samples",))


@case
def check_energy_unknown_forcefield(c, tmp):
    return Case(["check-energy", "--pdb", STRUCTURES / "alanine_dipeptide.pdb", "--forcefield", "no_such_ff.xml"],
                ("no_such_ff.xml",))


@case
def check_energy_without_pdb(c, tmp):
    return Case(["check-energy"], ("--pdb", "required"))


# --- class 1: preset and config files that are not ordinary TOML ------------------------------------
def _written_preset_case(name: str, content: bytes, *expect: str) -> None:
    def make(c: Corpus, tmp: Path) -> Case:
        preset = tmp / "presets" / f"{name}.toml"
        preset.parent.mkdir(exist_ok=True)
        preset.write_bytes(content)
        out = tmp / "run"
        return Case(["train", "--preset", preset, "--no-ui", "--out", out, *sets([f"data.path={c.data}"])],
                    (f"{name}.toml", *expect), watch=[preset.parent], absent=[out])
    make.__name__ = f"preset_{name}"
    CASES[make.__name__] = make


_written_preset_case("utf16", "[training]\nepochs = 2\n".encode("utf-16"), "UTF-16")
_written_preset_case("latin1", 'description = "caf\xe9"\n'.encode("latin-1"), "not UTF-8")
_written_preset_case("binary", bytes(range(256)) * 4, "binary file")
_written_preset_case("deeply_nested", b"x = " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested too deeply")
_written_preset_case("integer_of_thousands_of_digits", b"[training]\nepochs = " + b"7" * 5000 + b"\n",
                     "thousands of digits")
_written_preset_case("integer_too_large_for_a_float", b"[training]\nlr = " + b"9" * 400 + b"\n", "training.lr",
                     "too large")
_written_preset_case("absurd_temperature", b"[temperatures]\ncold = 300.0\nhot = 1e9\n", "temperatures.hot")
_written_preset_case("zero_kelvin", b"[temperatures]\ncold = 0.0\n", "temperatures.cold")
_written_preset_case("alerts_window_of_one", b"[alerts]\nrising_window = 1\n", "alerts.rising_window")
_written_preset_case("alerts_unknown_rule", b'[alerts]\ndisabled = ["no_such_rule"]\n', "alerts.disabled")
_written_preset_case("alerts_factor_below_one", b"[alerts]\ngrad_explosion_factor = 0.5\n",
                     "alerts.grad_explosion_factor")


def _set_case(name: str, item: str, *expect: str) -> None:
    def make(c: Corpus, tmp: Path) -> Case:
        out = tmp / "run"
        return Case(["train", "--no-ui", "--out", out, "--set", item, *sets([f"data.path={c.data}"])],
                    ("--set", *expect), absent=[out])
    make.__name__ = f"set_{name}"
    CASES[make.__name__] = make


_set_case("huge_integer_for_a_float", "training.lr=" + "9" * 400, "training.lr", "too large")
_set_case("device_meta", "training.device=meta", "training.device", "meta")
_set_case("device_mps", "training.device=mps", "training.device")
_set_case("negative_temperature", "temperatures.cold=-5", "temperatures.cold")


@case
def energy_platform_this_machine_lacks(c, tmp):
    out = tmp / "run"
    return Case(["train", "--no-ui", "--out", out, *sets([f"data.path={c.data}", "energy.platform=CUDA"])],
                ("energy.platform", "available here"), absent=[out])


@case
def data_platform_this_machine_lacks(c, tmp):
    out = tmp / "run"
    return Case(["train", "--no-ui", "--out", out, *sets([f"data.path={tmp / 'new.npz'}", "data.platform=OpenCL"])],
                ("data.platform", "available here"), absent=[out, tmp / "new.npz"])


@case
def saved_config_that_is_not_utf8(c, tmp):
    run = _run_copy(c, tmp)
    (run / "config.toml").write_bytes("preset = 'quickstart'\n".encode("utf-16"))
    return Case(["train", "--resume", run, "--no-ui", "--epochs", "3"], ("config.toml", "UTF-16"), watch=[run])


@case
def saved_config_with_a_huge_integer(c, tmp):
    run = _run_copy(c, tmp)
    text = (run / "config.toml").read_text()
    (run / "config.toml").write_text(text.replace("epochs = 1", "epochs = " + "1" * 6000))
    return Case(["train", "--resume", run, "--no-ui"], ("config.toml",), watch=[run])


@case
def saved_config_that_is_empty(c, tmp):
    run = _run_copy(c, tmp)
    (run / "config.toml").write_text("")
    return Case(["train", "--resume", run, "--no-ui", "--epochs", "3"], ("config.toml",), watch=[run])


# --- class 2: values accepted at load that used to fail later ----------------------------------------
@case
def check_energy_negative_noise(c, tmp):
    return Case(["check-energy", "--pdb", STRUCTURES / "alanine_dipeptide.pdb", "--noise", "-0.01"], ("--noise",))


@case
def check_energy_nan_noise(c, tmp):
    return Case(["check-energy", "--pdb", STRUCTURES / "alanine_dipeptide.pdb", "--noise", "nan"], ("--noise",))


@case
def simulate_negative_processes(c, tmp):
    return Case(["simulate", "--processes", "-2", "--out", tmp / "d.npz"], ("--processes",),
                absent=[tmp / "d.npz"])


# --- class 3: a refused start leaves the directory as it was -----------------------------------------
@case
def resume_with_a_checkpoint_of_the_wrong_shape(c, tmp):
    import torch

    run = _run_copy(c, tmp)
    ckpt = torch.load(run / "last.pt", weights_only=True)
    key = next(k for k, v in ckpt["model"].items() if getattr(v, "ndim", 0) == 2)
    ckpt["model"][key] = torch.zeros(3, 3)
    torch.save(ckpt, run / "last.pt")
    return Case(["train", "--resume", run, "--no-ui", "--epochs", "3"], ("last.pt",), watch=[run])


@case
def resume_from_best_that_is_missing(c, tmp):
    run = _run_copy(c, tmp)
    (run / "best.pt").unlink()
    return Case(["train", "--resume", run, "--from", "best", "--no-ui", "--epochs", "3"], ("best.pt",), watch=[run])


@case
def resume_with_nan_weights(c, tmp):
    import torch

    run = _run_copy(c, tmp)
    ckpt = torch.load(run / "last.pt", weights_only=True)
    key = next(k for k, v in ckpt["model"].items() if getattr(v, "is_floating_point", lambda: False)())
    ckpt["model"][key] = ckpt["model"][key] * float("nan")
    torch.save(ckpt, run / "last.pt")
    return Case(["train", "--resume", run, "--no-ui", "--epochs", "3"], ("last.pt", "finite"), watch=[run])


# --- class 7: odd entries in a run directory -----------------------------------------------------------
def _odd_entry_case(name: str, entry: str, command: str) -> None:
    def make(c: Corpus, tmp: Path) -> Case:
        run = _run_copy(c, tmp)
        (run / entry).unlink(missing_ok=True)
        (run / entry).mkdir()
        (run / entry / "keep").write_text("the user's")
        args = {"resume": ["train", "--resume", run, "--no-ui", "--epochs", "3"], "plot": ["plot", run],
                "control": ["control", run, "stop"]}[command]
        return Case(args, (entry, "not a regular file"), watch=[run])
    make.__name__ = name
    CASES[name] = make


_odd_entry_case("lock_is_a_directory", ".lock", "resume")
_odd_entry_case("metrics_is_a_directory_on_resume", "metrics.jsonl", "resume")
_odd_entry_case("metrics_is_a_directory_for_plot", "metrics.jsonl", "plot")
_odd_entry_case("metrics_is_a_directory_for_control", "metrics.jsonl", "control")


@case
def force_into_a_directory_whose_log_is_a_directory(c, tmp):
    run = _run_copy(c, tmp)
    (run / "train.log").mkdir()
    return Case(["train", "--no-ui", "--force", "--out", run, *sets([f"data.path={c.data}"])],
                ("train.log", "not a regular file"), watch=[run])


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_exit_2_and_touches_nothing(name, corpus, tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    case = CASES[name](corpus, tmp_path)
    watched = [cwd, BAD, corpus.data.parent, *case.watch]
    before = snapshot(watched)
    proc = cli(case.args, cwd)
    after = snapshot(watched)
    report = f"args: {case.args}\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr + proc.stdout, report
    assert proc.returncode == 2, report
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, report
    assert lines[0].startswith("molpt-tui: error: "), report
    for text in case.expect:
        assert text in lines[0], f"{text!r} not named\n{report}"
    assert after == before, f"files changed: {sorted(set(after.items()) ^ set(before.items()))}\n{report}"
    for path in case.absent:
        assert not path.exists(), f"{path} was created\n{report}"


def test_the_corpus_is_large():
    assert len(CASES) >= 60


# --- a full disk ------------------------------------------------------------------------------------
def test_checkpoint_write_on_a_full_disk_keeps_the_old_file(corpus, tmp_path, monkeypatch):
    """In-process: torch.save fails half-way with ENOSPC."""
    import torch

    from molpt_tui.errors import UserError
    from molpt_tui.training import checkpoint

    run = _run_copy(corpus, tmp_path)
    payload = checkpoint.load_checkpoint(run / "last.pt")
    before = snapshot([run])

    def full_disk(obj, fh, *args, **kwargs):
        fh.write(b"PK\x03\x04 partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(UserError, match=r"last\.pt: cannot write checkpoint \(No space left on device\)"):
        checkpoint.save_checkpoint(run / "last.pt", payload)
    assert snapshot([run]) == before  # the old checkpoint is intact and no temp file is left
    assert checkpoint.load_checkpoint(run / "last.pt")["epoch"] == 1


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real, nearly full file system: a tmpfs mount (needs root; skipped where mount is refused)."""
    mounts = []

    def make(size_bytes: int) -> Path:
        where = tmp_path / f"tmpfs{len(mounts)}"
        where.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(where)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
        mounts.append(where)
        return where

    yield make
    for where in mounts:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_full_disk_through_the_cli(corpus, tmp_path, small_tmpfs):
    # 1. A new run on a disk with room for the config and the log, not for a checkpoint.
    disk = small_tmpfs(128 * 1024)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    before = snapshot([corpus.data.parent, cwd])
    proc = cli(["train", "--no-ui", "--epochs", "2", "--out", disk / "run",
                *sets(TINY_TRAIN + [f"data.path={corpus.data}"])],
               cwd)
    report = proc.stdout[-1500:] + proc.stderr[-3000:]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, report
    (line,) = proc.stderr.splitlines()
    assert line.startswith("molpt-tui: error: ") and "No space left on device" in line and ".pt" in line, report
    assert snapshot([corpus.data.parent, cwd]) == before
    left = sorted(p.name for p in (disk / "run").iterdir())
    assert not [n for n in left if n.endswith((".pt", ".tmp"))], left  # no partial checkpoint, no temp file

    # 2. Resuming a run whose disk fills: its checkpoints are kept as they were.
    size = sum(p.stat().st_size for p in corpus.run.iterdir())
    disk = small_tmpfs(size + 96 * 1024)
    run = disk / "run"
    shutil.copytree(corpus.run, run)
    kept = {name: h for name, h in snapshot([run]).items() if name.endswith(".pt")}
    proc = cli(["train", "--resume", run, "--no-ui", "--epochs", "4"], cwd)
    report = proc.stdout[-1500:] + proc.stderr[-3000:]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, report
    (line,) = proc.stderr.splitlines()
    assert "No space left on device" in line, report
    assert {name: h for name, h in snapshot([run]).items() if name.endswith(".pt")} == kept
    assert not list(run.glob(".*.tmp"))


# --- plot tolerates a damaged log ---------------------------------------------------------------------
def test_plot_skips_a_corrupt_middle_line_and_a_partial_last_line(corpus, tmp_path):
    run = _run_copy(corpus, tmp_path)
    png = next(run.glob("loss_curves_*.png"))
    png.unlink()
    log = run / "metrics.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    middle = len(lines) // 2
    lines.insert(middle, '{"kind": "epoch", "epoch": 3, "loss": \n')            # corrupt line
    log.write_text("".join(lines) + '{"kind": "epoch", "epoch": 9, "lo')         # partial last line
    proc = cli(["plot", run], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    warnings = proc.stderr.splitlines()
    assert len(warnings) == 2, proc.stderr
    assert all(w.startswith("molpt-tui: warning: ") for w in warnings)
    assert f"metrics.jsonl:{middle + 1}: skipped a corrupt line" in warnings[0]
    assert f"metrics.jsonl:{len(lines) + 1}: skipped a partial last line" in warnings[1]
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"Wrote {png}" in proc.stdout
