"""Where presets are found: `$MOLPT_TUI_PRESETS` first, then the ones shipped in the package."""
from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import NamedTuple

from ..errors import UserError
from .tomlfile import Unreadable, read_toml

DEFAULT_PRESET = "quickstart"
ENV_VAR = "MOLPT_TUI_PRESETS"


class PresetInfo(NamedTuple):
    name: str
    description: str
    path: Path


def _shipped_dir() -> Path | None:
    """The package's own presets folder, wherever the package is installed (or the checkout)."""
    folder = resources.files("molpt_tui") / "presets"
    # Presets resolve structures relative to their own file and OpenMM reads those by path, so
    # only a package unpacked on disk (every pip install, editable or not) can serve them.
    return folder if isinstance(folder, Path) and folder.is_dir() else None


def presets_dirs(warn: Callable[[str], None] | None = None) -> list[Path]:
    """Directories searched for `<name>.toml`, first match wins."""
    dirs: list[Path] = []
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(os.path.expanduser(env))
        if path.is_dir():
            dirs.append(path)
        elif warn is not None:
            warn(f"{ENV_VAR}={env}: not a directory; ignored")
    shipped = _shipped_dir()
    if shipped is not None:
        dirs.append(shipped)
    return dirs


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a name too long for the file system, a directory we may not search
        return False


def _files(directory: Path) -> list[Path]:
    try:
        return sorted(p for p in directory.glob("*.toml") if _is_file(p))
    except OSError:
        return []


def list_presets(warn: Callable[[str], None] | None = None) -> list[PresetInfo]:
    """Every preset by name, the first directory's file winning a name.

    A file that cannot be read as TOML is left out and reported through `warn` (it still takes
    its name: `--preset NAME` would pick that file and fail, so the list must not offer
    another one under that name).
    """
    seen: dict[str, PresetInfo | None] = {}
    for directory in presets_dirs(warn):
        for path in _files(directory):
            if path.stem in seen:
                continue
            try:
                description = read_toml(path).get("description", "")
            except Unreadable as exc:
                seen[path.stem] = None
                if warn is not None:
                    warn(f"{path}: skipped, unreadable preset: {exc.reason}")
                continue
            text = " ".join(description.split()) if isinstance(description, str) else ""
            seen[path.stem] = PresetInfo(path.stem, text, path)
    return [info for info in seen.values() if info is not None]


def find_preset(name_or_path: str) -> Path:
    """The file of a preset name, or the given .toml path; one clear line when there is none."""
    candidate = Path(os.path.expanduser(name_or_path))
    if candidate.suffix == ".toml" or "/" in name_or_path or os.sep in name_or_path:
        if not _is_file(candidate):
            raise UserError(f"{name_or_path}: preset file not found (give an existing .toml file or a preset name; "
                            f"`molpt-tui presets` lists them)")
        return candidate
    dirs = presets_dirs()
    for directory in dirs:
        path = directory / f"{name_or_path}.toml"
        if _is_file(path):
            return path
    names = sorted({p.stem for d in dirs for p in _files(d)})
    close = difflib.get_close_matches(name_or_path, names, n=1)
    hint = f"did you mean '{close[0]}'?" if close else "`molpt-tui presets` lists them"
    raise UserError(f"--preset: unknown preset '{name_or_path}' ({hint})")
