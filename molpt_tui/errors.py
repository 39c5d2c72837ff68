"""Errors that are the user's to fix: the CLI prints them as one line and exits 2."""
from __future__ import annotations


class UserError(Exception):
    """Bad input: a preset, a file, a flag. The message is the whole story, no traceback."""

    exit_code = 2


class ConfigError(UserError):
    def __init__(self, source: str, key: str, problem: str, fix: str = ""):
        self.source, self.key, self.problem, self.fix = source, key, problem, fix
        text = f"{source}: {key}: {problem}" if key else f"{source}: {problem}"
        if fix:
            text += f" ({fix})"
        super().__init__(text)
