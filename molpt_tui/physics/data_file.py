"""The replica data file (.npz): its destination checks, its atomic write, its validating reader.

Safety: the file is read with `allow_pickle=False` and its metadata are parsed with
`ast.literal_eval`, which accepts only literals (no names, no calls), so nothing in a data
file is ever run as code. Every problem with a file is a UserError naming it.
"""
from __future__ import annotations

import ast
import errno
import os
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import UserError
from ..fileio import atomic_write_bytes

if TYPE_CHECKING:
    from .systems import MolecularSystem

FORMAT_NAME = "molpt-tui.replica-data"
FORMAT_VERSION = 1
META_MAX_CHARS = 100_000   # a metadata string beyond this is not ours; literal_eval of it could exhaust memory
REQUIRED = ("positions", "temperatures", "potential_energy", "atom_names", "meta")
REGENERATE = "regenerate it with `molpt-tui simulate --force` or use --set data.path=..."
OTHER_PLACE = "choose another --out or data.path"


@dataclass
class ReplicaData:
    positions: np.ndarray          # [n_temps, n_samples, n_atoms, 3] nm
    temperatures: np.ndarray       # [n_temps] K
    potential_energy: np.ndarray   # [n_temps, n_samples] kJ/mol, from the MD System
    atom_names: list[str]
    meta: dict[str, Any]

    def index_of(self, temperature: float) -> int:
        hits = np.flatnonzero(np.isclose(self.temperatures, temperature, atol=1e-6))
        if hits.size == 0:
            held = ", ".join(f"{t:g}" for t in self.temperatures)
            raise UserError(f"data file has no samples at {temperature:g} K (it holds {held} K); "
                            "run `molpt-tui simulate --force` with this preset")
        return int(hits[0])

    def at(self, temperature: float) -> np.ndarray:
        block: np.ndarray = self.positions[self.index_of(temperature)]
        return block


# --- destination ------------------------------------------------------------------------------

def disk_fix(err: int | None) -> str:
    """What the user can do about an OSError on writing."""
    if err in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return f"free disk space or {OTHER_PLACE}"
    if err == errno.EROFS:
        return f"the file system is read-only; {OTHER_PLACE}"
    if err in (errno.EACCES, errno.EPERM):
        return f"no permission to write there; {OTHER_PLACE}"
    return OTHER_PLACE


def _strerror(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def check_destination(path: Path, force: bool, nbytes: int) -> list[Path]:
    """Every reason the data file could not be written at `path`, found before minutes of MD:
    what is in the way, the directory's writability (a probe file is created and removed) and
    its free space against `nbytes` (an upper bound of the file's size). Returns the missing
    parent directories, outermost first: they are created only when the file is written.
    """
    if path.is_dir():
        raise UserError(f"{path}: is a directory, not a data file; give a file name such as {path / 'data.npz'}")
    if path.exists() or path.is_symlink():
        if not force:
            raise UserError(f"{path}: data file exists; it is never overwritten (use --force to replace it, "
                            "or --set data.path=OTHER.npz)")
        if not path.is_file():
            raise UserError(f"{path}: exists and is not a regular file; {OTHER_PLACE}")
    missing: list[Path] = []
    parent = path.parent
    while not parent.exists():
        if parent.is_symlink():
            raise UserError(f"{path}: cannot create the data file: {parent} is a broken symbolic link; {OTHER_PLACE}")
        missing.append(parent)
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{path}: cannot create the data file: {parent} is a file, not a directory; {OTHER_PLACE}")
    _probe(parent, path)
    try:
        st = os.statvfs(parent)
        free = st.f_bavail * st.f_frsize
    except (OSError, AttributeError):
        free = None  # no statvfs (Windows) or not answerable: the final write still reports it
    if free is not None and free < nbytes:
        raise UserError(f"{parent}: not enough free space for the data file {path.name} (needs up to "
                        f"{_mb(nbytes)}, {_mb(free)} free); {disk_fix(errno.ENOSPC)}")
    return missing[::-1]


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _probe(directory: Path, path: Path) -> None:
    """Create, write one byte to and remove a file in `directory`: the only test that is right
    for read-only mounts, ACLs, quotas and root alike."""
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=str(directory))
    except OSError as exc:
        raise UserError(f"{directory}: cannot write the data file {path.name} there ({_strerror(exc)}); "
                        f"{disk_fix(exc.errno)}") from None
    try:
        os.write(fd, b"\0")
        os.fsync(fd)
    except OSError as exc:
        raise UserError(f"{directory}: cannot write the data file {path.name} there ({_strerror(exc)}); "
                        f"{disk_fix(exc.errno)}") from None
    finally:
        os.close(fd)
        try:
            os.unlink(name)
        except OSError:
            pass


def estimated_size(n_temps: int, n_samples: int, n_atoms: int) -> int:
    """Upper bound of the file's size: float32 coordinates barely compress."""
    return n_temps * n_samples * (n_atoms * 3 * 4 + 8) + 64 * 1024 + 200 * n_atoms


# --- writing ----------------------------------------------------------------------------------

def check_finite(path: Path, positions: np.ndarray, energies: np.ndarray, temperatures: np.ndarray,
                 fix: str) -> None:
    """Raise UserError naming the first temperature with NaN/inf samples and how many."""
    for k, temp in enumerate(temperatures):
        bad_pos = ~np.isfinite(positions[k]).reshape(positions.shape[1], -1).all(axis=1)
        bad_e = ~np.isfinite(energies[k])
        n_bad = int(np.count_nonzero(bad_pos | bad_e))
        if n_bad:
            what = " and ".join(w for w, b in (("positions", bad_pos.any()), ("energies", bad_e.any())) if b)
            raise UserError(f"{path}: {n_bad} of {positions.shape[1]} samples at {float(temp):g} K have non-finite "
                            f"{what} (NaN or inf); {fix}")


def write_data_file(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any],
                    missing_dirs: list[Path]) -> None:
    """Write atomically (temp file in the same directory, fsync, rename): an interrupted or
    failed write leaves neither a partial file nor a temp file, nor the directories it made."""
    check_finite(path, arrays["positions"], arrays["potential_energy"], arrays["temperatures"],
                 "nothing was written (this is a bug: MD output is checked as it is made)")
    payload: dict[str, Any] = dict(arrays, meta=np.array(repr(_plain(meta))))
    made: list[Path] = []
    try:
        for d in missing_dirs:
            d.mkdir()
            made.append(d)
        atomic_write_bytes(path, lambda fh: np.savez_compressed(fh, **payload))
    except BaseException as exc:
        for d in reversed(made):
            try:
                d.rmdir()
            except OSError:
                pass
        if isinstance(exc, OSError):
            kept = "the existing file is unchanged" if path.is_file() else "nothing was written"
            raise UserError(f"{path}: cannot write the data file ({_strerror(exc)}); {kept}; "
                            f"{disk_fix(exc.errno)}") from None
        raise


def _plain(meta: dict[str, Any]) -> dict[str, Any]:
    """repr() of nan/inf is not a literal: store None instead, so the reader can parse it."""
    out: dict[str, Any] = {}
    for key, value in meta.items():
        if isinstance(value, float) and not np.isfinite(value):
            value = None
        out[key] = value
    return out


# --- reading ----------------------------------------------------------------------------------

def load_data(path: str | Path, ms: MolecularSystem | None = None) -> ReplicaData:
    """Load and validate a data file; with `ms` it must match that system's atoms.

    Every defect is a UserError naming the file: not found, not an .npz archive, corrupt or
    truncated, arrays missing or of the wrong type or shape, non-finite samples (with their
    temperature and count), another system."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a directory, not a data file (give the .npz file)")
    if not path.is_file():
        raise UserError(f"{path}: data file not found (run `molpt-tui simulate` or `molpt-tui train` to create it)")
    raw = _read_arrays(path)
    meta = _parse_meta(path, raw["meta"])
    positions, temperatures, energies = raw["positions"], raw["temperatures"], raw["potential_energy"]
    names = raw["atom_names"]
    _expect_kind(path, "positions", positions, "f", "floating-point")
    _expect_kind(path, "potential_energy", energies, "f", "floating-point")
    _expect_kind(path, "temperatures", temperatures, "fiu", "numeric")
    _expect_kind(path, "atom_names", names, "U", "string")
    if positions.ndim != 4 or positions.shape[3] != 3 or 0 in positions.shape:
        raise UserError(f"{path}: positions has shape {positions.shape}, expected [temperatures, samples, atoms, 3] "
                        f"with none empty; {REGENERATE}")
    n_temps, n_samples, n_atoms, _ = positions.shape
    if temperatures.ndim != 1 or temperatures.shape[0] != n_temps:
        raise UserError(f"{path}: the file lists {temperatures.size} temperatures but holds positions for "
                        f"{n_temps}; {REGENERATE}")
    if energies.shape != (n_temps, n_samples):
        raise UserError(f"{path}: potential_energy has shape {energies.shape}, expected {(n_temps, n_samples)} "
                        f"to match positions; {REGENERATE}")
    if names.shape != (n_atoms,):
        raise UserError(f"{path}: atom_names has shape {names.shape}, expected ({n_atoms},) to match positions; "
                        f"{REGENERATE}")
    if not np.all(np.isfinite(temperatures)) or np.any(temperatures <= 0):
        raise UserError(f"{path}: temperatures {temperatures.tolist()} must be finite and positive; {REGENERATE}")
    if len(np.unique(temperatures)) != n_temps:
        raise UserError(f"{path}: temperatures {temperatures.tolist()} repeat; {REGENERATE}")
    check_finite(path, positions, energies, temperatures,
                 f"the data are unusable: {REGENERATE} (a smaller data.timestep_fs may help)")
    residue_names = _optional(path, raw, "residue_names", "U", (n_atoms,), np.array(["UNK"] * n_atoms))
    acc = _optional(path, raw, "swap_acceptance", "f", (n_temps - 1,), np.full(n_temps - 1, np.nan))
    attempts = _optional(path, raw, "swap_attempts", "iu", (n_temps - 1,), np.zeros(n_temps - 1, np.int64))
    data = ReplicaData(
        positions=np.asarray(positions, dtype=np.float64),
        temperatures=np.asarray(temperatures, dtype=np.float64),
        potential_energy=np.asarray(energies, dtype=np.float64),
        atom_names=[str(a) for a in names],
        meta=dict(meta, swap_acceptance=acc, swap_attempts=attempts, residue_names=[str(a) for a in residue_names]),
    )
    if ms is not None and (n_atoms != ms.n_atoms or data.atom_names != list(ms.atom_names)):
        raise UserError(f"{path}: data file is for another system ({n_atoms} atoms, "
                        f"{meta.get('pdb')}) than {ms.pdb_path.name} ({ms.n_atoms} atoms); "
                        "use --set data.path=... or `molpt-tui simulate --force`")
    return data


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    def unreadable(detail: str) -> UserError:
        return UserError(f"{path}: unreadable data file ({detail}); delete it or run `molpt-tui simulate --force`")

    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
    except OSError as exc:
        raise UserError(f"{path}: cannot read the data file ({_strerror(exc)})") from None
    if magic.startswith(b"\x93NUMPY"):
        raise unreadable("a single .npy array, not an .npz archive of replica data")
    if not magic.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        raise unreadable("not an .npz archive")
    try:
        z = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise unreadable(f"truncated or corrupt archive: {_first_line(exc)}") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise unreadable("not an .npz archive of replica data")
    with z:
        missing = [key for key in REQUIRED if key not in z.files]
        if missing:
            raise UserError(f"{path}: not a molpt-tui data file: missing array(s) {', '.join(missing)}; {REGENERATE}")
        out: dict[str, np.ndarray] = {}
        for key in z.files:
            try:
                out[key] = z[key]
            except ValueError as exc:
                detail = "pickled Python objects, which are never loaded" if "pickle" in str(exc) else _first_line(exc)
                raise unreadable(f"array {key}: {detail}") from None
            except (OSError, EOFError, zipfile.BadZipFile, zlib.error, RuntimeError, MemoryError) as exc:
                raise unreadable(f"truncated or corrupt: array {key}: {_first_line(exc)}") from None
    return out


def _parse_meta(path: Path, raw: np.ndarray) -> dict[str, Any]:
    if raw.dtype.kind != "U" or raw.ndim != 0 or raw.dtype.itemsize // 4 > META_MAX_CHARS:
        raise UserError(f"{path}: not a molpt-tui data file (its meta is not a short text); {REGENERATE}")
    try:
        meta = ast.literal_eval(str(raw))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise UserError(f"{path}: not a molpt-tui data file (its meta is not a plain literal); {REGENERATE}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise UserError(f"{path}: not a molpt-tui replica data file (format {FORMAT_NAME!r} expected); {REGENERATE}")
    version = meta.get("version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise UserError(f"{path}: data format version {version!r} is newer than this molpt-tui "
                        f"(reads up to {FORMAT_VERSION}); upgrade molpt-tui or {REGENERATE}")
    return meta


def _expect_kind(path: Path, key: str, arr: np.ndarray, kinds: str, what: str) -> None:
    if arr.dtype.kind not in kinds:
        raise UserError(f"{path}: array {key} has dtype {arr.dtype}, expected {what}; {REGENERATE}")


def _optional(path: Path, raw: dict[str, np.ndarray], key: str, kinds: str, shape: tuple[int, ...],
              default: np.ndarray) -> np.ndarray:
    """Diagnostic arrays: absent is tolerated (files written by hand), wrong is not."""
    if key not in raw:
        return default
    arr = raw[key]
    _expect_kind(path, key, arr, kinds, {"U": "string", "f": "floating-point"}.get(kinds, "integer"))
    if arr.shape != shape:
        raise UserError(f"{path}: array {key} has shape {arr.shape}, expected {shape}; {REGENERATE}")
    return arr


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
