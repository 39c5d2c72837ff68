from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for tui_fakes

import pytest  # noqa: E402
from tui_fakes import FakeTrainer, ThreadHandle, Wait, wait_until  # noqa: E402


@pytest.fixture
def wait() -> Wait:
    return wait_until


@pytest.fixture
def fakes() -> Iterator[list[ThreadHandle | FakeTrainer]]:
    """Register every fake trainer (or its handle) here: each is ended after the test, so no
    thread outlives it and writes into another test's directory or eats its CPU."""
    started: list[ThreadHandle | FakeTrainer] = []
    yield started
    for item in started:
        fake = item.fake if isinstance(item, ThreadHandle) else item
        fake.kill()
        if isinstance(item, ThreadHandle):
            item.thread.join(10.0)
        else:
            fake.returned.wait(10.0)
