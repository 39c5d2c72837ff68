"""`molpt-tui check-energy`: an energy engine against OpenMM directly; 0 within tolerance, 1 outside."""
from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from ..physics.check import format_check, format_check_json, run_check
from ..physics.engines import EngineName, TorchPrecision
from ..physics.torch_energy import CompileMode


def check_energy(pdb: Path, forcefield: Sequence[str], *, engine: EngineName, compile: CompileMode,
                 precision: TorchPrecision, samples: int, noise: float, platform: str, device: str,
                 as_json: bool) -> int:
    result = run_check(pdb, forcefield, engine=engine, samples=samples, noise=noise, compile=compile,
                       precision=precision, platform=platform, device=device,
                       log=lambda text: print(text, file=sys.stderr, flush=True))
    print(format_check_json(result) if as_json else format_check(result))
    return result.exit_code
