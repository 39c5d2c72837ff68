"""Checkpoints: written atomically, read without executing anything.

A checkpoint is written to a temporary file in the same directory, fsynced and renamed over
the old one, so a kill at any moment leaves either the old or the new complete file. Loading
uses `torch.load(weights_only=True)`: a checkpoint is data, never code.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from ..errors import UserError

CHECKPOINT_FORMAT = "molpt-tui.checkpoint"
CHECKPOINT_VERSION = 1


def atomic_write_bytes(path: Path, write) -> None:
    """`write(fh)` fills a temp file that replaces `path` only once complete and synced."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make results unreadable to the group
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(str(path.parent), os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


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
        items = [_plain(v) for v in value]
        return value if all(a is b for a, b in zip(items, value)) else type(value)(items)
    return value


def save_checkpoint(path: Path, payload: dict[str, Any]) -> Path:
    import torch

    payload = _plain(dict(payload, format=CHECKPOINT_FORMAT, format_version=CHECKPOINT_VERSION))
    try:
        atomic_write_bytes(Path(path), lambda fh: torch.save(payload, fh))
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
    import pickle
    import zipfile

    import torch

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        # Checkpoints written before `_plain` hold torch.__version__ as a TorchVersion (a str).
        with torch.serialization.safe_globals([torch.torch_version.TorchVersion]):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise UserError(f"{path}: corrupt or unreadable checkpoint ({_load_problem(exc)}); "
                        "use another checkpoint (best.pt, last.pt) or start a new run with --force") from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path}: not a molpt-tui checkpoint")
    if int(data.get("format_version", 0)) > CHECKPOINT_VERSION:
        raise UserError(f"{path}: checkpoint format {data['format_version']} is newer than this molpt-tui; upgrade it")
    return data


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



def check_compatible(ckpt: dict[str, Any], path: Path, ms, cfg) -> None:
    """A checkpoint must belong to this system and this model architecture."""
    system = ckpt.get("system") or {}
    if system.get("atom_names") != list(ms.atom_names):
        raise UserError(f"{path}: checkpoint is for another system ({system.get('pdb')}, "
                        f"{system.get('n_atoms')} atoms) than {ms.pdb_path.name} ({ms.n_atoms} atoms)")
    saved = (ckpt.get("config") or {}).get("model") or {}
    wanted = cfg.to_dict()["model"]
    if saved != wanted:
        diff = ", ".join(f"model.{k} {saved.get(k)!r} in the checkpoint, {wanted.get(k)!r} now"
                         for k in sorted(set(saved) | set(wanted)) if saved.get(k) != wanted.get(k))
        raise UserError(f"{path}: checkpoint has another model architecture ({diff}); "
                        "resume without changing [model], or start a new run with --out")
