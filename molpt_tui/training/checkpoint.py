"""Checkpoints: written atomically, read without executing anything, validated before use.

A checkpoint is written through `fileio.atomic_write_bytes`, so a kill at any moment leaves
either the old or the new complete file. Loading uses `torch.load(weights_only=True)`: a
checkpoint is data, never code. Data that unpickle safely can still be the wrong things (a
missing key, an epoch that is a string, NaN weights): `validate_checkpoint` refuses them with
one line naming the file and the key, before anything is loaded or written.

Payload: the training snapshot of `state.TrainingState.state_dict()` (`state.STATE_KEYS`) plus
`format`, `format_version`, `config` (the resolved config), `system` (what it was trained on)
and `versions`; the final model also holds `selection` (epoch, score, metric, split: why these
weights were chosen).
"""
from __future__ import annotations

import dataclasses
import platform
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..errors import UserError
from ..fileio import atomic_write_bytes
from .schema import SchemaError, as_float, as_int, as_mapping, as_str, as_str_list, describe, required
from .state import check_state_dict

if TYPE_CHECKING:
    from ..config import Config
    from ..physics.systems import MolecularSystem

CHECKPOINT_FORMAT = "molpt-tui.checkpoint"
# 2: named training state (best_epoch, no first_loss); version 1 files are not resumed.
CHECKPOINT_VERSION = 2
REFUSED_FIX = "use another checkpoint (best.pt, last.pt) or start a new run with --force"


def make_payload(state: Mapping[str, Any], cfg: Config, ms: MolecularSystem) -> dict[str, Any]:
    """A training snapshot with what identifies it: the config, the system and the versions."""
    import openmm
    import torch

    return dict(
        state,
        config=cfg.to_dict(),
        system={"n_atoms": ms.n_atoms, "atom_names": list(ms.atom_names), "pdb": ms.pdb_path.name,
                "forcefield": list(cfg.system.forcefield)},
        versions={"molpt_tui": __version__, "torch": str(torch.__version__), "openmm": str(openmm.__version__),
                  "python": platform.python_version()},
    )


def _plain(value: Any) -> Any:
    """str subclasses as plain str: `torch.__version__` is a TorchVersion, which `weights_only`
    loading refuses, so a checkpoint holding it could never be resumed. Containers with nothing
    to convert are returned as they are (state dicts keep their type and metadata)."""
    if isinstance(value, str):
        return value if type(value) is str else str(value)
    if isinstance(value, dict):
        items = {k: _plain(v) for k, v in value.items()}
        return value if all(items[k] is value[k] for k in value) else items
    if type(value) in (list, tuple):
        converted = [_plain(v) for v in value]
        return value if all(a is b for a, b in zip(converted, value)) else type(value)(converted)
    return value


def save_checkpoint(path: Path, payload: Mapping[str, Any]) -> Path:
    import torch

    data = _plain(dict(payload, format=CHECKPOINT_FORMAT, format_version=CHECKPOINT_VERSION))
    try:
        atomic_write_bytes(Path(path), lambda fh: torch.save(data, fh))
    except (OSError, RuntimeError) as exc:
        # torch's zip writer hides a failed write (disk full) behind a RuntimeError from its __exit__.
        cause = _os_error(exc)
        if cause is None:
            raise
        raise UserError(f"{path}: cannot write checkpoint ({cause.strerror or cause}); "
                        "free disk space or use --out") from None
    return Path(path)


def _os_error(exc: BaseException | None) -> OSError | None:
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError):
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The validated payload of `path`; a UserError line naming the file for anything else."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        # torch explains a refused pickle in a multi-paragraph warning on top of the exception,
        # which would break the one-line error; the exception says what we need.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # Checkpoints written before `_plain` hold torch.__version__ as a TorchVersion (a str).
            with torch.serialization.safe_globals([torch.torch_version.TorchVersion]):
                data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged file raises anything from EOFError to struct.error
        raise UserError(f"{path}: corrupt or unreadable checkpoint ({_load_problem(exc)}); {REFUSED_FIX}") from None
    return validate_checkpoint(data, path)


def refused(path: Path | str, key: str, problem: str) -> UserError:
    """The one line for a checkpoint whose `key` holds something unusable."""
    return UserError(f"{path}: checkpoint key '{key}' {problem}; {REFUSED_FIX}")


def validate_checkpoint(data: object, path: Path | str) -> dict[str, Any]:
    """`data` if it is a complete, well-typed checkpoint with finite weights; else a UserError
    naming `path`, the key and a fix. Shapes against a model are checked when it is loaded
    (`TrainingState.load_state_dict`), which the trainer does on construction."""
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path}: not a molpt-tui checkpoint ({REFUSED_FIX})")
    try:
        version = as_int(required(data, "format_version"), "format_version", minimum=1)
        if version > CHECKPOINT_VERSION:
            raise UserError(f"{path}: checkpoint format {version} is newer than this molpt-tui "
                            f"({CHECKPOINT_VERSION}); upgrade molpt-tui")
        if version < CHECKPOINT_VERSION:
            raise UserError(f"{path}: checkpoint format {version} was written by an older molpt-tui and cannot be "
                            "resumed; start a new run with --force (or --out)")
        check_state_dict(data)
        _check_metadata(data)
    except SchemaError as exc:
        raise refused(path, exc.key, exc.problem) from None
    return data


def _check_metadata(data: Mapping[str, Any]) -> None:
    config = as_mapping(required(data, "config"), "config")
    for section in ("model", "training", "temperatures"):
        as_mapping(required(config, section), f"config.{section}")
    epochs = required(as_mapping(config["training"], "config.training"), "epochs")
    as_int(epochs, "config.training.epochs", minimum=1)
    system = as_mapping(required(data, "system"), "system")
    n_atoms = as_int(required(system, "n_atoms"), "system.n_atoms", minimum=1)
    names = as_str_list(required(system, "atom_names"), "system.atom_names")
    if len(names) != n_atoms:
        raise SchemaError("system.atom_names", f"has {len(names)} names for {n_atoms} atoms")
    as_str(required(system, "pdb"), "system.pdb")
    versions = as_mapping(required(data, "versions"), "versions")
    for name, value in versions.items():
        if not isinstance(value, str):
            raise SchemaError(f"versions.{name}", f"must be a string, got {describe(value)}")
    if "selection" in data:  # the final model: which epoch it holds and why
        selection = as_mapping(data["selection"], "selection")
        try:
            epoch = as_int(required(selection, "epoch"), "epoch")
            if epoch != data["epoch"]:
                raise SchemaError("epoch", f"is {epoch}, but the weights are of epoch {data['epoch']}")
            as_float(required(selection, "score"), "score", allow_inf=False)
            as_str(required(selection, "metric"), "metric")
            if "weights" in selection:  # which weights: as trained, or their moving average
                as_str(selection["weights"], "weights")
        except SchemaError as exc:
            raise exc.within("selection") from None


def _load_problem(exc: BaseException) -> str:
    """The useful part of torch.load's multi-paragraph messages, on one short line."""
    import zipfile

    text = str(exc)
    if "central directory" in text or "zip archive" in text or isinstance(exc, (EOFError, zipfile.BadZipFile)):
        return "truncated or damaged file"
    if "inline_container" in text:
        return "not a torch checkpoint file"
    if "WeightsUnpickler error:" in text:
        rest = text.split("WeightsUnpickler error:", 1)[1].strip().splitlines()
        detail = rest[0].strip() if rest else ""
        if detail.startswith("Unsupported operand") or not detail:
            return "not a torch checkpoint file"
        return f"holds data that is not plain tensors: {detail.split(' was not', 1)[0][:120]}"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first[:160]


def check_compatible(ckpt: Mapping[str, Any], path: Path, ms: MolecularSystem, cfg: Config) -> None:
    """A (validated) checkpoint must belong to this system and this model architecture."""
    system = ckpt["system"]
    if list(system["atom_names"]) != list(ms.atom_names):
        raise UserError(f"{path}: checkpoint is for another system ({system.get('pdb')}, "
                        f"{system.get('n_atoms')} atoms) than {ms.pdb_path.name} ({ms.n_atoms} atoms)")
    wanted = cfg.to_dict()["model"]
    # a key added to [model] later is its default in a checkpoint written before it existed
    defaults = dataclasses.asdict(type(cfg.model)())
    saved = {**{k: v for k, v in defaults.items() if k not in ckpt["config"]["model"]}, **ckpt["config"]["model"]}
    if saved != wanted:
        diff = ", ".join(f"model.{k} {saved.get(k)!r} in the checkpoint, {wanted.get(k)!r} now"
                         for k in sorted(set(saved) | set(wanted)) if saved.get(k) != wanted.get(k))
        raise UserError(f"{path}: checkpoint has another model architecture ({diff}); "
                        "resume without changing [model], or start a new run with --out")
