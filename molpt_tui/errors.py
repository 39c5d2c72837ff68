"""Errors that are the user's to fix: the CLI prints them as one line and exits 2."""
from __future__ import annotations


def one_line(text: str) -> str:
    """`text` with every character that could break or forge a terminal line escaped.

    Messages quote file names, TOML keys and values the user wrote; a newline, a NUL or a
    right-to-left override in any of them must not split the one-line error or hide part of it.
    """
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def first_error_line(exc: BaseException) -> str:
    """The first line of an exception from a toolchain (a compiler, OpenMM), at most 200
    characters, for a one-line warning; the exception's type when it says nothing."""
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__


def setting_phrase(key: str, value: str) -> str:
    """How a message quotes a setting: as the user typed it, `--device cuda` for a typed flag,
    `training.device = "cuda"` for a key in a file or in --set."""
    return f"{key} {value}" if key.startswith("--") else f'{key} = "{value}"'


class UserError(Exception):
    """Bad input: a preset, a file, a flag. The message is the whole story, no traceback."""

    exit_code = 2

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str):
            args = (one_line(args[0]),)
        super().__init__(*args)


class ConfigError(UserError):
    """A configuration problem: "<source>: <key>: <problem> (<fix>)".

    `source` is the file that gave the value, or the flag (`--set`) when the command line did.
    """

    def __init__(self, source: str, key: str, problem: str, fix: str = "") -> None:
        self.source, self.key, self.problem, self.fix = source, key, problem, fix
        text = f"{source}: {key}: {problem}" if key else f"{source}: {problem}"
        if fix:
            text += f" ({fix})"
        super().__init__(text)
