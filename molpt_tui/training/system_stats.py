"""The trainer process as the system sees it: CPU, threads, memory, energy evaluations, GPU.

A `SystemSampler` is a sink in the trainer's list: the run's first event (`RunStarted`) starts a
daemon thread that samples every `every_s` seconds and emits a `SystemStats` event to the sinks
it was given (the metrics log, so the TUI and `watch` show the same line); `Finished` stops it
before that event reaches them, so nothing follows a run's last event. Those sinks are then
called from two threads and must be thread-safe (`MetricsLogSink` and the console are).

psutil is a dependency; without it (or off Linux, where a figure cannot be read) the fields it
would fill stay NaN. GPU figures come from nvidia-ml-py (`pynvml`) when it is installed and the
flow trains on a CUDA device; otherwise they are NaN. Sampling never raises into training.
"""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .events import Event, Finished, RunStarted, Sink, SystemStats

if TYPE_CHECKING:
    import torch

    from ..physics.engine_protocol import EnergyEngine, Precision

MIB = 1024.0 * 1024.0


class CountingEngine:
    """An EnergyEngine that counts the configurations it evaluates (the field's unit of cost:
    target energy evaluations), otherwise the engine it wraps."""

    def __init__(self, engine: EnergyEngine) -> None:
        self.inner = engine
        self.evaluations = 0

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def description(self) -> str:
        return self.inner.description

    @property
    def device(self) -> torch.device:
        return self.inner.device

    @property
    def precision(self) -> Precision:
        return self.inner.precision

    @property
    def compiled(self) -> bool:
        return self.inner.compiled

    @property
    def compile_note(self) -> str:
        return self.inner.compile_note

    @property
    def n_atoms(self) -> int:
        return self.inner.n_atoms

    @property
    def n_nonfinite(self) -> int:
        return self.inner.n_nonfinite

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        self.evaluations += int(x.shape[0])
        return self.inner.energy(x)

    def warm_up(self, x: torch.Tensor, log: Callable[[str], None], *, without_grad: bool = True) -> None:
        self.inner.warm_up(x, log, without_grad=without_grad)

    def close(self) -> None:
        self.inner.close()


class _Gpu:
    """Utilisation and memory of one CUDA device through NVML; every figure NaN without it."""

    def __init__(self, device: torch.device) -> None:
        self.handle: Any = None
        self.nvml: Any = None
        self.index = device.index or 0
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml = pynvml
            self.handle = self._handle(pynvml)
        except Exception:  # not installed, no driver, no such device: no GPU figures, no error
            self.handle = None

    def _handle(self, pynvml: Any) -> Any:
        """NVML numbers devices as the machine does, torch as CUDA_VISIBLE_DEVICES lets it see
        them; the UUID names the same device in both."""
        import torch

        try:
            uuid = str(torch.cuda.get_device_properties(self.index).uuid)
            return pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
        except Exception:
            return pynvml.nvmlDeviceGetHandleByIndex(self.index)

    def read(self) -> tuple[float, float, float, float]:
        """(utilisation %, device memory used MiB, total MiB, torch's reserved MiB)."""
        util = used = total = reserved = math.nan
        try:
            import torch

            if torch.cuda.is_available():
                reserved = torch.cuda.memory_reserved(self.index) / MIB
        except Exception:
            pass
        if self.handle is not None:
            try:
                util = float(self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu)
                info = self.nvml.nvmlDeviceGetMemoryInfo(self.handle)
                used, total = info.used / MIB, info.total / MIB
            except Exception:
                pass
        return util, used, total, reserved


class ProcessProbe:
    """CPU time, threads and resident memory of this process and its worker processes."""

    def __init__(self) -> None:
        try:
            import psutil

            self.me: Any = psutil.Process()
            self.psutil: Any = psutil
        except Exception:
            self.me = None
        self._cpu: dict[int, float] = {}   # CPU seconds per pid at the last sample

    def read(self) -> tuple[float, int, float]:
        """(CPU seconds used since the last read, threads of this process, resident MiB of all)."""
        if self.me is None:
            return math.nan, 0, math.nan
        delta, rss, seen = 0.0, 0.0, {}
        try:
            threads = int(self.me.num_threads())
            procs = [self.me, *self.me.children(recursive=True)]
        except Exception:
            return math.nan, 0, math.nan
        for proc in procs:
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    cpu = float(times.user + times.system)
                    rss += proc.memory_info().rss / MIB
            except Exception:  # a worker that ended between listing and reading
                continue
            seen[proc.pid] = cpu
            # a worker that started since the last read used all its CPU time within the interval
            delta += cpu - self._cpu.get(proc.pid, 0.0)
        first = not self._cpu
        self._cpu = seen
        return (math.nan if first else max(0.0, delta)), threads, rss


class SystemSampler(Sink):
    """See the module docstring. `counter`: the setup's engine, counting (None: no counts)."""

    def __init__(self, sinks: Sequence[Sink], counter: CountingEngine | None = None,
                 device: torch.device | None = None, cpus: int = 0, every_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sinks = list(sinks)
        self.counter = counter
        self.cpus = cpus
        self.every_s = every_s
        self.clock = clock
        self.probe = ProcessProbe()
        self.gpu = _Gpu(device) if device is not None and device.type == "cuda" else None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_t = clock()
        self._last_evals = 0
        self.probe.read()  # the baseline of the first interval

    def emit(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.start()
        elif isinstance(event, Finished):
            self.stop()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="system-sampler", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10.0)

    def close(self) -> None:
        self.stop()

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                stats = self.sample()
            except Exception:  # never into training: the next interval tries again
                continue
            if self._stop.is_set():
                return
            for sink in self.sinks:
                try:
                    sink.emit(stats)
                except Exception:
                    pass

    def sample(self) -> SystemStats:
        """One reading since the previous one (public so tests need not wait for the thread)."""
        now = self.clock()
        interval = max(1e-9, now - self._last_t)
        cpu_s, threads, rss = self.probe.read()
        evals = self.counter.evaluations if self.counter is not None else 0
        rate = (evals - self._last_evals) / interval if self.counter is not None else math.nan
        self._last_t, self._last_evals = now, evals
        util = used = total = reserved = math.nan
        if self.gpu is not None:
            util, used, total, reserved = self.gpu.read()
        return SystemStats(cpu_pct=100.0 * cpu_s / interval, threads=threads, rss_mb=rss, energy_evals=evals,
                           energy_evals_per_s=rate, cpus=self.cpus, interval_s=interval, gpu_util_pct=util,
                           gpu_mem_used_mb=used, gpu_mem_total_mb=total, gpu_torch_mem_mb=reserved)
