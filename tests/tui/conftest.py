from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for tui_fakes

import pytest  # noqa: E402

from tui_fakes import wait_until  # noqa: E402


@pytest.fixture
def wait():
    return wait_until
