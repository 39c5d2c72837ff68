"""The two spline functions a coupling layer calls, eager or through ``torch.compile``.

Profiling the quickstart's MLP coupling flow on CPU (4 layers, hidden 64, batch 128) put the
spline arithmetic first: softmax, where, mul, add, cumsum and gather over [batch, dims, bins]
tensors, a few hundred small operations a layer, each a pass over memory; the matrix products
of the MLP were ~5 % of the time. ``torch.compile`` fuses each spline into a few loops: the
quickstart's whole training step, energies included, ran 1.5x faster, a transformer flow's
1.1-1.2x, its step being mostly matrix products (``benchmarks/bench_flow_compile.py``). A first
compile takes minutes on a CPU, which is why compiling is a choice (``training.compile_flow``)
and not the default.

Only calls with autograd recording use the compiled functions: every evaluation, the test run,
``pt`` and ``checkpoints_on_test.py`` run the eager code under ``torch.no_grad``, so each figure
reported is computed the same way with or without compiling, and the untrained flow is the exact
identity there (``splines``' bit-for-bit guarantee holds for the eager code; fused kernels may
round differently).
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from . import splines

__all__ = ["EAGER", "SplineKernels", "compiled_kernels"]

SplineFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class SplineKernels:
    interval: SplineFn
    circular: SplineFn


EAGER = SplineKernels(splines.interval_rq_spline, splines.circular_rq_spline)

_lock = threading.Lock()
_compiled: SplineKernels | None = None


def compiled_kernels() -> SplineKernels:
    """The process's compiled pair, made on first use (compiling itself happens at the first call).

    dynamic=True: the batch, the number of transformed dims (which differs between the layers of
    one flow) and the bin count are symbolic, so a flow's layers and both its directions share a
    handful of graphs instead of one per shape; Dynamo would fall back to eager past its
    per-function limit of variants.
    """
    global _compiled
    with _lock:
        if _compiled is None:
            _compiled = SplineKernels(_compile(splines.interval_rq_spline), _compile(splines.circular_rq_spline))
        return _compiled


def _compile(fn: SplineFn) -> SplineFn:
    compiled: Any = torch.compile(fn, dynamic=True)
    return compiled  # type: ignore[no-any-return]
