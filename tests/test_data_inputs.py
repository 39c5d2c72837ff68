"""Every bad input of the data path: where the file goes, what MD starts from, what a file holds.

Each case is one UserError line naming the file or key and a fix; nothing is written before
every check passed; nothing the user had changes; no partial file, temp file or directory is
left. The CLI cases run `python -m molpt_tui` and hash every file of the directories involved
before and after (helpers from test_bad_inputs).
"""
from __future__ import annotations

import errno
import os
import pickle
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from molpt_testdata import STRUCTURES
from test_bad_inputs import cli, sets, snapshot

from molpt_tui.config import load_config
from molpt_tui.errors import UserError
from molpt_tui.physics.data import SimulationProgress, load_data, simulate

ALA2 = STRUCTURES / "alanine_dipeptide.pdb"
TINY = ["data.n_samples=20", "data.equilibration_ps=0.1", "data.stride=10"]
TEMPS = (300.0, 367.4, 450.0)


def quiet(*_: object) -> None:
    pass


def tiny_config(*extra: str):
    return load_config("quickstart", [*TINY, *extra])


def listing(root: Path) -> list[str]:
    """Every path under root, dot files and directories included."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def expect_one_line_error(args: list, cwd: Path, watch: list[Path], expect: tuple[str, ...],
                          absent: tuple[Path, ...] = ()) -> str:
    cwd.mkdir(exist_ok=True)
    watched = [cwd, *watch]
    before = snapshot(watched), {str(d): listing(d) for d in watched if d.is_dir()}
    proc = cli(args, cwd)
    after = snapshot(watched), {str(d): listing(d) for d in watched if d.is_dir()}
    report = f"args: {args}\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr + proc.stdout, report
    assert proc.returncode == 2, report
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("molpt-tui: error: "), report
    for text in expect:
        assert text in lines[0], f"{text!r} not named\n{report}"
    assert after == before, f"files changed\n{report}"
    for path in absent:
        assert not path.exists(), f"{path} was created\n{report}"
    return lines[0]


def simulate_args(out: Path, *extra: str) -> list:
    return ["simulate", "--preset", "quickstart", *sets([*TINY, *extra]), "--out", out]


def write_pdb(path: Path, edit) -> Path:
    """The shipped alanine dipeptide with atom coordinates changed: edit(index, (x, y, z)) -> (x, y, z)."""
    out, index = [], 0
    for line in ALA2.read_text().splitlines(keepends=True):
        if line.startswith(("ATOM", "HETATM")):
            xyz = edit(index, (float(line[30:38]), float(line[38:46]), float(line[46:54])))
            line = line[:30] + "".join(f"{v:8.3f}" if np.isfinite(v) else f"{'nan':>8}" for v in xyz) + line[54:]
            index += 1
        out.append(line)
    path.write_text("".join(out))
    return path


@pytest.fixture
def tmpfs(tmp_path):
    """A real small (or read-only) file system: a tmpfs mount; needs root, skipped where refused."""
    mounts = []

    def make(size_bytes: int, read_only: bool = False, fill: bool = False) -> Path:
        where = tmp_path / f"tmpfs{len(mounts)}"
        where.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(where)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
        mounts.append(where)
        (where / "keep.txt").write_text("the user's file\n")
        if fill:
            fill_disk(where / "filler.bin")
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True, capture_output=True)
        return where

    yield make
    for where in mounts:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill_disk(path: Path) -> None:
    with open(path, "wb", buffering=0) as fh:  # unbuffered: close() has nothing left to flush
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    assert path.stat().st_size > 0


# --- the destination ------------------------------------------------------------------------------

@pytest.mark.integration
def test_out_under_a_regular_file(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a directory\n")
    expect_one_line_error(simulate_args(blocker / "out.npz"), tmp_path / "cwd", [tmp_path],
                          ("file.txt/out.npz", "is a file, not a directory", "--out"))


@pytest.mark.integration
def test_out_is_an_existing_directory_even_with_force(tmp_path):
    target = tmp_path / "data"
    target.mkdir()
    (target / "mine.npz").write_bytes(b"the user's")
    expect_one_line_error([*simulate_args(target), "--force"], tmp_path / "cwd", [tmp_path],
                          (str(target), "is a directory", "file name"))


@pytest.mark.integration
def test_read_only_file_system(tmp_path, tmpfs):
    disk = tmpfs(1 << 20, read_only=True)
    expect_one_line_error(simulate_args(disk / "d.npz"), tmp_path / "cwd", [disk],
                          (str(disk), "Read-only file system", "read-only", "--out"))


@pytest.mark.integration
def test_disk_too_small_for_the_data_is_found_before_md(tmp_path, tmpfs):
    disk = tmpfs(256 * 1024)
    # 2000 samples x 3 temperatures x 22 atoms: ~1.6 MB of float32
    expect_one_line_error(simulate_args(disk / "sub" / "d.npz", "data.n_samples=2000"), tmp_path / "cwd", [disk],
                          (str(disk), "not enough free space", "d.npz", "free disk space"),
                          absent=(disk / "sub",))


@pytest.mark.integration
def test_full_disk_fails_the_probe(tmp_path, tmpfs):
    disk = tmpfs(128 * 1024, fill=True)
    expect_one_line_error(simulate_args(disk / "d.npz"), tmp_path / "cwd", [disk],
                          (str(disk), "No space left on device", "free disk space"))


@pytest.mark.integration
def test_train_creating_its_data_under_a_regular_file(tmp_path):
    blocker = tmp_path / "inputs" / "file.txt"
    blocker.parent.mkdir()
    blocker.write_text("a file\n")
    run = tmp_path / "run"
    expect_one_line_error(["train", "--no-ui", "--out", run, "--epochs", "1",
                           *sets([*TINY, f"data.path={blocker / 'd.npz'}"])],
                          tmp_path / "cwd", [blocker.parent], ("file.txt/d.npz", "is a file, not a directory"),
                          absent=(run,))


def test_missing_parent_directories_are_made_when_the_file_is_written(tmp_path):
    out = tmp_path / "a" / "b" / "d.npz"
    assert simulate(tiny_config(), out_path=out, progress=False, log=quiet) == out
    assert load_data(out).positions.shape == (3, 20, 22, 3)
    assert listing(tmp_path) == ["a", "a/b", "a/b/d.npz"]


def test_failed_run_makes_no_directories(tmp_path):
    pdb = write_pdb(tmp_path / "nan.pdb", lambda i, xyz: (np.nan, *xyz[1:]) if i == 2 else xyz)
    with pytest.raises(UserError, match="non-finite coordinates"):
        simulate(tiny_config(f"system.pdb={pdb}"), out_path=tmp_path / "a" / "b" / "d.npz", progress=False, log=quiet)
    assert listing(tmp_path) == ["nan.pdb"]


@pytest.mark.parametrize(("err", "fix"), [(errno.EROFS, "read-only"), (errno.ENOSPC, "free disk space"),
                                          (errno.EACCES, "no permission"), (errno.EDQUOT, "free disk space")])
def test_unwritable_destination_is_found_before_any_md(tmp_path, monkeypatch, err, fix):
    """EROFS, ENOSPC, EACCES and quotas at the probe (root passes permission bits, so simulated)."""
    real = tempfile.mkstemp

    def refuse(*args, **kwargs):
        if Path(kwargs.get("dir", "")) == tmp_path:
            raise OSError(err, os.strerror(err), str(tmp_path))
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    events: list[SimulationProgress] = []
    with pytest.raises(UserError) as info:
        simulate(tiny_config(), out_path=tmp_path / "d.npz", progress=events.append, log=quiet)
    text = str(info.value)
    assert text.startswith(f"{tmp_path}: cannot write the data file d.npz there ({os.strerror(err)})"), text
    assert fix in text and "\n" not in text
    assert events == []  # not a single MD step was spent
    assert listing(tmp_path) == []


def test_full_disk_at_the_final_write_keeps_the_existing_file(tmp_path, monkeypatch):
    out = tmp_path / "d.npz"
    simulate(tiny_config(), out_path=out, progress=False, log=quiet)
    before = snapshot([tmp_path])

    def full_disk(fh, **arrays):
        fh.write(b"PK\x03\x04 partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(np, "savez_compressed", full_disk)
    with pytest.raises(UserError) as info:
        simulate(tiny_config(), out_path=out, force=True, progress=False, log=quiet)
    text = str(info.value)
    assert text.startswith(f"{out}: cannot write the data file (No space left on device)"), text
    assert "the existing file is unchanged" in text and "free disk space" in text
    assert snapshot([tmp_path]) == before and listing(tmp_path) == ["d.npz"]


def test_disk_filling_up_during_md_on_a_real_file_system(tmp_path, tmpfs):
    disk = tmpfs(1 << 20)

    def fill_when_writing(p: SimulationProgress) -> None:
        if p.phase == "writing":
            fill_disk(disk / "filler.bin")  # another job takes the space while MD ran

    out = disk / "new" / "d.npz"
    with pytest.raises(UserError) as info:
        simulate(tiny_config(), out_path=out, progress=fill_when_writing, log=quiet)
    text = str(info.value)
    assert text.startswith(f"{out}: cannot write the data file (No space left on device); nothing was written"), text
    assert listing(disk) == ["filler.bin", "keep.txt"]  # no temp file, no partial file, no new directory


# --- the starting structure -----------------------------------------------------------------------

@pytest.mark.integration
def test_pdb_with_nan_coordinates(tmp_path):
    pdb = write_pdb(tmp_path / "nan.pdb", lambda i, xyz: (xyz[0], np.nan, xyz[2]) if i == 4 else xyz)
    out = tmp_path / "d.npz"
    expect_one_line_error(simulate_args(out, f"system.pdb={pdb}"), tmp_path / "cwd", [tmp_path],
                          ("nan.pdb", "non-finite coordinates", "atom 5"), absent=(out,))


@pytest.mark.integration
def test_pdb_with_every_atom_on_one_point(tmp_path):
    pdb = write_pdb(tmp_path / "point.pdb", lambda i, xyz: (1.0, 2.0, 3.0))
    out = tmp_path / "d.npz"
    expect_one_line_error(simulate_args(out, f"system.pdb={pdb}"), tmp_path / "cwd", [tmp_path],
                          ("point.pdb", "overlapping atoms", "0.000 nm apart"), absent=(out,))


def test_two_overlapping_atoms_are_named(tmp_path):
    coords: dict[int, tuple[float, float, float]] = {}

    def edit(i: int, xyz: tuple[float, float, float]) -> tuple[float, float, float]:
        coords[i] = xyz
        return coords[8] if i == 14 else xyz

    pdb = write_pdb(tmp_path / "clash.pdb", edit)
    with pytest.raises(UserError, match=r"clash\.pdb: atoms 9 \(CA\) and 15 \(C\) are 0\.000 nm apart"):
        simulate(tiny_config(f"system.pdb={pdb}"), out_path=tmp_path / "d.npz", progress=False, log=quiet)
    assert listing(tmp_path) == ["clash.pdb"]


@pytest.mark.integration
def test_md_that_blows_up_names_the_replica_and_the_timestep(tmp_path):
    # 5 fs with flexible X-H bonds (period ~10 fs) is beyond the integrator's stability limit.
    out = tmp_path / "d.npz"
    line = expect_one_line_error(simulate_args(out, "data.timestep_fs=5"), tmp_path / "cwd", [tmp_path],
                                 ("replica ", " K)", "data.timestep_fs = 5", "overlapping atoms"), absent=(out,))
    assert " ps" in line or " ns" in line


# --- platform and processes ------------------------------------------------------------------------

@pytest.mark.integration
def test_platform_this_machine_lacks(tmp_path):
    from molpt_tui.physics.openmm_platforms import available_platforms

    missing = next((p for p in ("CUDA", "OpenCL") if p not in available_platforms()), None)
    if missing is None:
        pytest.skip("this machine has every OpenMM platform")
    out = tmp_path / "d.npz"
    expect_one_line_error(simulate_args(out, f"data.platform={missing}"), tmp_path / "cwd", [tmp_path],
                          ("data.platform", missing, "Reference"), absent=(out,))


@pytest.mark.integration
def test_zero_processes(tmp_path):
    out = tmp_path / "d.npz"
    expect_one_line_error([*simulate_args(out), "--processes", "0"], tmp_path / "cwd", [tmp_path],
                          ("--processes",), absent=(out,))


@pytest.mark.parametrize("n", [0, -1])
def test_processes_below_one_in_process(tmp_path, n):
    with pytest.raises(UserError, match=r"--processes must be >= 1"):
        simulate(tiny_config(), out_path=tmp_path / "d.npz", n_procs=n, progress=False, log=quiet)
    assert listing(tmp_path) == []


# --- data files ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def good_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("good") / "good.npz"
    simulate(tiny_config(), out_path=path, progress=False, log=quiet)
    return path


def arrays_of(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {key: z[key] for key in z.files}


def meta_of(**changes: object) -> np.ndarray:
    meta = {"format": "molpt-tui.replica-data", "version": 1, "pdb": "alanine_dipeptide.pdb", **changes}
    return np.array(repr(meta))


def _nan_positions(a):
    a["positions"] = a["positions"].copy()
    a["positions"][1, [0, 5, 7], 3, 0] = np.nan
    return a


def _inf_energy(a):
    a["potential_energy"] = a["potential_energy"].copy()
    a["potential_energy"][0, 2] = np.inf
    return a


EDITS = {
    "more_temperatures_than_position_blocks": (lambda a: dict(a, temperatures=np.array([*TEMPS, 600.0])),
                                               ("lists 4 temperatures but holds positions for 3",)),
    "fewer_temperatures_than_position_blocks": (lambda a: dict(a, temperatures=np.array(TEMPS[:2])),
                                                ("lists 2 temperatures but holds positions for 3",)),
    "energies_of_another_shape": (lambda a: dict(a, potential_energy=a["potential_energy"][:, :-1]),
                                  ("potential_energy has shape (3, 19)", "(3, 20)")),
    "positions_of_three_dimensions": (lambda a: dict(a, positions=a["positions"][0]), ("positions has shape",)),
    "positions_without_samples": (lambda a: dict(a, positions=a["positions"][:, :0],
                                                 potential_energy=a["potential_energy"][:, :0]),
                                  ("positions has shape (3, 0, 22, 3)",)),
    "integer_positions": (lambda a: dict(a, positions=a["positions"].astype(np.int64)),
                          ("positions has dtype int64", "floating-point")),
    "string_energies": (lambda a: dict(a, potential_energy=a["potential_energy"].astype(str)),
                        ("potential_energy has dtype <U",)),
    "numeric_atom_names": (lambda a: dict(a, atom_names=np.arange(22)), ("atom_names has dtype",)),
    "atom_names_of_another_length": (lambda a: dict(a, atom_names=a["atom_names"][:-1]),
                                     ("atom_names has shape (21,)",)),
    "no_positions": (lambda a: {k: v for k, v in a.items() if k != "positions"}, ("missing array(s) positions",)),
    "no_meta_no_energies": (lambda a: {k: v for k, v in a.items() if k not in ("meta", "potential_energy")},
                            ("missing array(s) potential_energy, meta",)),
    "nan_positions": (_nan_positions, ("3 of 20 samples at 367.4 K", "non-finite positions")),
    "inf_energy": (_inf_energy, ("1 of 20 samples at 300 K", "non-finite energies")),
    "zero_temperature": (lambda a: dict(a, temperatures=np.array([0.0, 367.4, 450.0])), ("finite and positive",)),
    "repeated_temperature": (lambda a: dict(a, temperatures=np.array([300.0, 300.0, 450.0])), ("repeat",)),
    "swap_attempts_of_another_shape": (lambda a: dict(a, swap_attempts=np.zeros(5, np.int64)),
                                       ("swap_attempts has shape (5,)",)),
    "meta_of_another_format": (lambda a: dict(a, meta=meta_of(format="something.else")), ("not a molpt-tui",)),
    "meta_from_the_future": (lambda a: dict(a, meta=meta_of(version=99)), ("version 99", "newer")),
    "meta_that_is_a_list": (lambda a: dict(a, meta=np.array("[1, 2, 3]")), ("not a molpt-tui",)),
    "meta_that_is_a_number_array": (lambda a: dict(a, meta=np.arange(3)), ("meta is not a short text",)),
}


@pytest.mark.parametrize("name", list(EDITS))
def test_defective_data_file_is_one_clear_error(good_file, tmp_path, name):
    edit, expect = EDITS[name]
    path = tmp_path / f"{name}.npz"
    np.savez(path, **edit(arrays_of(good_file)))
    before = snapshot([tmp_path])
    with pytest.raises(UserError) as info:
        load_data(path)
    text = str(info.value)
    assert text.startswith(f"{path}: ") and "\n" not in text, text
    for part in expect:
        assert part in text, text
    assert snapshot([tmp_path]) == before


def test_metadata_is_never_run_as_code(good_file, tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.npz"
    np.savez(path, **dict(arrays_of(good_file), meta=np.array(f"__import__('pathlib').Path({str(marker)!r}).touch()")))
    with pytest.raises(UserError, match="not a plain literal"):
        load_data(path)
    assert not marker.exists()


class _Touch:
    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_pickled_objects_are_never_loaded(good_file, tmp_path):
    marker = tmp_path / "PWNED"
    inside = tmp_path / "object_array.npz"
    np.savez(inside, **dict(arrays_of(good_file), atom_names=np.array([_Touch(marker)] * 22, dtype=object)))
    with pytest.raises(UserError, match=r"object_array\.npz: unreadable data file .*pickled Python objects"):
        load_data(inside)
    whole = tmp_path / "pickle.npz"
    whole.write_bytes(pickle.dumps(_Touch(marker)))
    with pytest.raises(UserError, match=r"pickle\.npz: unreadable data file \(not an \.npz archive\)"):
        load_data(whole)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["truncated", "corrupt_middle", "text", "empty", "npy", "directory", "absent"])
def test_file_that_is_no_data_file(good_file, tmp_path, kind):
    data = good_file.read_bytes()
    path = tmp_path / f"{kind}.npz"
    expect = "unreadable data file"
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "corrupt_middle":
        path.write_bytes(data[:200] + bytes(b ^ 0xFF for b in data[200:2000]) + data[2000:])
    elif kind == "text":
        path.write_text("temperature,x,y,z\n300,0,0,0\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "npy":
        with open(path, "wb") as fh:
            np.save(fh, np.zeros((3, 20, 22, 3)))
        expect = "single .npy array"
    elif kind == "directory":
        path.mkdir()
        expect = "is a directory"
    else:
        expect = "data file not found"
    with pytest.raises(UserError) as info:
        load_data(path)
    text = str(info.value)
    assert text.startswith(f"{path}: ") and expect in text and "\n" not in text, text


def test_data_with_another_atom_count_than_the_system(good_file, tmp_path):
    from molpt_tui.physics.systems import system_from_config

    a = arrays_of(good_file)
    a["positions"], a["atom_names"], a["residue_names"] = a["positions"][:, :, :10], a["atom_names"][:10], \
        a["residue_names"][:10]
    path = tmp_path / "ten_atoms.npz"
    np.savez(path, **a)
    assert load_data(path).positions.shape == (3, 20, 10, 3)  # a valid file, of another molecule
    with pytest.raises(UserError, match=r"ten_atoms\.npz: data file is for another system \(10 atoms"):
        load_data(path, system_from_config(tiny_config()))


@pytest.mark.integration
def test_train_on_a_data_file_with_nan_samples(good_file, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    path = data_dir / "nan.npz"
    np.savez(path, **_nan_positions(arrays_of(good_file)))
    run = tmp_path / "run"
    expect_one_line_error(["train", "--no-ui", "--out", run, *sets([*TINY, f"data.path={path}"])], tmp_path / "cwd",
                          [data_dir], ("nan.npz", "3 of 20 samples at 367.4 K", "non-finite"), absent=(run,))
