"""Numpy mirrors of `History` for plotting: per-epoch series and per-evaluation series.

History keeps Python lists (cheap appends from any thread). Converting a million-element list
to an array on every redraw would cost ~30 ms per series, so the epoch mirror copies only what
changed since the last sync: usually the few epochs of one batch, or the tail after a resume
truncated the history. A series is mirrored from the first time a pane asks for it (a pane that
is never shown costs no memory), and its smoothed twin likewise.

Smoothing is the debiased exponential moving average (Adam's bias correction, TensorBoard's
smoothing): s_t = Σ β^(t-i) y_i / Σ β^(t-i) over the finite y_i so far, so the first epochs are
not pulled towards zero and a non-finite epoch is skipped instead of poisoning the rest.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from molpt_tui.training.events import LogBlock
from molpt_tui.training.history import History

from .decimate import minmax_decimate

# Epoch series read from History as they are.
BASE_KEYS = ("loss", "fwd_energy", "fwd_logdet", "inv_energy", "inv_logdet", "lr", "kl")
# The two halves of the loss, as the PNG plots them.
DERIVED_KEYS = {"fwd_term": ("fwd_energy", "fwd_logdet"), "inv_term": ("inv_energy", "inv_logdet")}
KEYS = BASE_KEYS + tuple(DERIVED_KEYS)
SMOOTH_PREFIX = "ema:"
# β of the moving average: a memory of ~10 epochs, which calms the noise of a few steps per
# epoch without hiding a trend of tens of epochs.
EMA_BETA = 0.9
# The average is computed in chunks of this many epochs with one matrix product each; the
# carry between chunks is a short Python loop (n / 64 iterations).
EMA_CHUNK = 64
# Extremes are pre-aggregated per block of this many epochs, so decimating a million points for
# a redraw reads ~2000 block summaries instead of the raw series: redraw cost stops growing
# with the length of the run.
BLOCK = 512


def smooth_key(key: str) -> str:
    return SMOOTH_PREFIX + key


def _ema_sums(values: np.ndarray, weights: np.ndarray, beta: float, carry: float) -> tuple[np.ndarray, float]:
    """s_t = β·s_{t-1} + (1-β)·values_t with s_{-1} = carry, vectorised in chunks; returns s and
    its last value."""
    n = values.size
    if n == 0:
        return np.empty(0), carry
    L = EMA_CHUNK
    chunks = -(-n // L)
    padded = np.zeros(chunks * L)
    padded[:n] = values * weights
    powers = beta ** np.arange(L + 1)
    # local[c, j] = (1-β) Σ_{i<=j} β^(j-i) x[c, i]: one product with a triangular Toeplitz matrix.
    idx = np.arange(L)
    lag = idx[None, :] - idx[:, None]
    toeplitz = np.where(lag >= 0, (1.0 - beta) * powers[np.clip(lag, 0, L)], 0.0)
    local = padded.reshape(chunks, L) @ toeplitz
    starts = np.empty(chunks)
    decay = powers[L]
    s = carry
    ends = local[:, -1].tolist()
    for c in range(chunks):
        starts[c] = s
        s = decay * s + ends[c]
    out = (local + starts[:, None] * powers[1:][None, :]).reshape(-1)[:n]
    return out, float(out[-1])


class SeriesStore:
    def __init__(self, capacity: int = 1024) -> None:
        self._capacity = max(int(capacity), 16)
        self.n = 0
        self.epochs = np.zeros(self._capacity, dtype=np.int64)
        self._data: dict[str, np.ndarray] = {}
        # Running sums of the smoothed series: numerator and weight (how much of the average is
        # real data), per epoch, so a sync resumes the recursion from any epoch.
        self._ema_num: dict[str, np.ndarray] = {}
        self._ema_den: dict[str, np.ndarray] = {}
        self._history: History | None = None
        self._nb = 0  # complete blocks summarised
        self._bmin: dict[str, np.ndarray] = {}
        self._bmax: dict[str, np.ndarray] = {}
        self._imin: dict[str, np.ndarray] = {}
        self._imax: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return self.n

    @property
    def keys(self) -> list[str]:
        return list(self._data)

    # --- storage -----------------------------------------------------------------------------
    def _grow(self, needed: int) -> None:
        if needed <= self._capacity:
            return
        capacity = self._capacity
        while capacity < needed:
            capacity *= 2
        epochs = np.zeros(capacity, dtype=np.int64)
        epochs[: self.n] = self.epochs[: self.n]
        self.epochs = epochs
        for table in (self._data, self._ema_num, self._ema_den):
            for key, old in table.items():
                new = np.zeros(capacity)
                new[: self.n] = old[: self.n]
                table[key] = new
        nblocks = capacity // BLOCK + 1
        tables: tuple[dict[str, np.ndarray], ...] = (self._bmin, self._bmax, self._imin, self._imax)
        for summaries in tables:
            for key, summary in summaries.items():
                grown: np.ndarray = np.zeros(nblocks, dtype=summary.dtype)
                grown[: self._nb] = summary[: self._nb]
                summaries[key] = grown
        self._capacity = capacity

    def _allocate(self, key: str) -> None:
        self._data[key] = np.zeros(self._capacity)
        nblocks = self._capacity // BLOCK + 1
        self._bmin[key] = np.zeros(nblocks)
        self._bmax[key] = np.zeros(nblocks)
        self._imin[key] = np.zeros(nblocks, dtype=np.int64)
        self._imax[key] = np.zeros(nblocks, dtype=np.int64)
        if key.startswith(SMOOTH_PREFIX):
            self._ema_num[key] = np.zeros(self._capacity)
            self._ema_den[key] = np.zeros(self._capacity)

    def has(self, key: str) -> bool:
        return key in self._data

    def ensure(self, key: str) -> None:
        """Mirror `key` (a base, derived or smoothed key) from now on, filled up to the present."""
        if key in self._data:
            return
        base = key.removeprefix(SMOOTH_PREFIX)
        if base not in KEYS:
            raise KeyError(key)
        if key != base:
            self.ensure(base)
        elif base in DERIVED_KEYS:
            for part in DERIVED_KEYS[base]:
                self.ensure(part)
        self._allocate(key)
        self._fill(key, 0, self.n)
        self._summarise_key(key, 0, self._nb)

    def _fill(self, key: str, start: int, n: int) -> None:
        """Compute key[start:n] (its inputs are already filled up to n)."""
        if n <= start:
            return
        out = self._data[key]
        if key.startswith(SMOOTH_PREFIX):
            raw = self._data[key.removeprefix(SMOOTH_PREFIX)][start:n]
            finite = np.isfinite(raw)
            values = np.where(finite, raw, 0.0)
            weights = finite.astype(float)
            num, den = self._ema_num[key], self._ema_den[key]
            c_num = float(num[start - 1]) if start else 0.0
            c_den = float(den[start - 1]) if start else 0.0
            with np.errstate(over="ignore", invalid="ignore"):
                num[start:n], _ = _ema_sums(values, weights, EMA_BETA, c_num)
                den[start:n], _ = _ema_sums(np.ones_like(values), weights, EMA_BETA, c_den)
                np.divide(num[start:n], den[start:n], out=out[start:n], where=den[start:n] > 0)
            out[start:n][den[start:n] <= 0] = np.nan
        elif key in DERIVED_KEYS:
            energy, logdet = DERIVED_KEYS[key]
            # inf - inf is NaN, which the plots drop anyway; no need to warn about it.
            with np.errstate(invalid="ignore", over="ignore"):
                np.subtract(self._data[energy][start:n], self._data[logdet][start:n], out=out[start:n])
        else:
            history = self._history
            source = history.series.get(key, []) if history is not None else []
            if len(source) >= n:
                out[start:n] = source[start:n]
            else:
                out[start:n] = np.nan

    def _ordered_keys(self) -> Iterable[str]:
        """Present keys with their inputs first: base, derived, then smoothed."""
        keys = list(self._data)
        rank = {k: (2 if k.startswith(SMOOTH_PREFIX) else 1 if k in DERIVED_KEYS else 0) for k in keys}
        return sorted(keys, key=lambda k: rank[k])

    def sync(self, history: History, start: int = 0) -> None:
        """Copy history[start:] into the arrays; everything before `start` is unchanged."""
        self._history = history
        n = len(history.epochs)
        start = max(0, min(start, self.n, n))
        self._grow(n)
        if n > start:
            self.epochs[start:n] = history.epochs[start:]
            for key in self._ordered_keys():
                self._fill(key, start, n)
        self.n = n
        b0, b1 = min(start // BLOCK, self._nb), n // BLOCK
        self._nb = b1
        for key in self._data:
            self._summarise_key(key, b0, b1)

    def _summarise_key(self, key: str, b0: int, b1: int) -> None:
        """Min/max (value and index) of blocks b0..b1-1; non-finite values never win."""
        if b1 <= b0:
            return
        offsets = np.arange(b0, b1, dtype=np.int64) * BLOCK
        blocks = self._data[key][b0 * BLOCK: b1 * BLOCK].reshape(b1 - b0, BLOCK)
        finite = np.isfinite(blocks)
        if finite.all():
            lo, hi = blocks, blocks
        else:
            lo = np.where(finite, blocks, np.inf)
            hi = np.where(finite, blocks, -np.inf)
        i_lo = lo.argmin(axis=1)
        i_hi = hi.argmax(axis=1)
        rows = np.arange(b1 - b0)
        self._bmin[key][b0:b1] = lo[rows, i_lo]
        self._bmax[key][b0:b1] = hi[rows, i_hi]
        self._imin[key][b0:b1] = offsets + i_lo
        self._imax[key][b0:b1] = offsets + i_hi

    def clear(self) -> None:
        self.n = 0
        self._nb = 0

    # --- reading -----------------------------------------------------------------------------
    def window_start(self, last_epochs: int | None) -> int:
        if last_epochs is None or not self.n:
            return 0
        first = int(self.epochs[self.n - 1]) - int(last_epochs) + 1
        return int(np.searchsorted(self.epochs[: self.n], first, side="left"))

    def first_epoch(self, last_epochs: int | None) -> int | None:
        """The first epoch in the window (None when there are no epochs)."""
        if not self.n:
            return None
        return int(self.epochs[self.window_start(last_epochs)])

    def decimated(self, key: str, last_epochs: int | None, bins: int) -> tuple[np.ndarray, np.ndarray]:
        """Like `minmax_decimate(*view(key, last_epochs), bins)`, in time independent of n."""
        self.ensure(key)
        n, i0 = self.n, self.window_start(last_epochs)
        bins = max(int(bins), 1)
        k = math.ceil((n - i0) / bins) if n > i0 else 1
        x, y = self.epochs, self._data[key]
        if k < 2 * BLOCK:
            return minmax_decimate(x[i0:n], y[i0:n], bins)
        per_bin = math.ceil(k / BLOCK)  # blocks per bin: at most `bins` groups
        c0 = -(-i0 // BLOCK)
        picks: list[np.ndarray] = [self._raw_extremes(key, i0, c0 * BLOCK)]
        groups = (self._nb - c0) // per_bin
        end = c0 + groups * per_bin
        for bvals, bidx, pick in ((self._bmin, self._imin, np.argmin), (self._bmax, self._imax, np.argmax)):
            if groups:
                grid = bvals[key][c0:end].reshape(groups, per_bin)
                j = pick(grid, axis=1)
                chosen = c0 + np.arange(groups) * per_bin + j
                ok = np.isfinite(bvals[key][chosen])
                picks.append(bidx[key][chosen[ok]])
            if end < self._nb:
                rest = bvals[key][end:self._nb]
                j = int(pick(rest))
                if math.isfinite(rest[j]):
                    picks.append(bidx[key][end + j: end + j + 1])
        picks.append(self._raw_extremes(key, self._nb * BLOCK, n))
        ends = np.array([i0, n - 1], dtype=np.int64)
        picks.append(ends[np.isfinite(y[ends])])
        idx = np.unique(np.concatenate(picks))
        return x[idx], y[idx]

    def _raw_extremes(self, key: str, a: int, b: int) -> np.ndarray:
        if b <= a:
            return np.empty(0, dtype=np.int64)
        seg = self._data[key][a:b]
        finite = np.isfinite(seg)
        if not finite.any():
            return np.empty(0, dtype=np.int64)
        lo = np.where(finite, seg, np.inf).argmin()
        hi = np.where(finite, seg, -np.inf).argmax()
        return np.array([a + lo, a + hi], dtype=np.int64)

    def view(self, key: str, last_epochs: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(epochs, values) as views; with `last_epochs`, only the most recent window."""
        self.ensure(key)
        i = self.window_start(last_epochs)
        return self.epochs[i: self.n], self._data[key][i: self.n]


# LogBlock fields the evaluation panes plot, and the field holding each one's standard error.
EVAL_FIELDS: dict[str, str] = {"kl_val": "kl_val_se", "acc_flow": "acc_flow_se", "acc_naive": "acc_naive_se",
                               "ess_fwd": "ess_fwd_se", "ess_inv": "ess_inv_se", "kl": ""}


class EvalSeries:
    """The held-out evaluations (LogBlocks) as arrays: few points (the adaptive logging
    schedule), rebuilt whenever the blocks change."""

    def __init__(self) -> None:
        self.epochs = np.empty(0)
        self._values: dict[str, np.ndarray] = {}
        self._errors: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return int(self.epochs.size)

    def rebuild(self, blocks: list[LogBlock]) -> None:
        self.epochs = np.array([b.epoch for b in blocks], dtype=float)
        for key, err in EVAL_FIELDS.items():
            self._values[key] = np.array([float(getattr(b, key)) for b in blocks], dtype=float)
            self._errors[key] = (np.array([float(getattr(b, err)) for b in blocks], dtype=float) if err
                                 else np.full(len(blocks), np.nan))

    def series(self, key: str, first_epoch: int | None = None,
               bins: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(epochs, values, standard errors) from `first_epoch` on, decimated to `bins` bins."""
        x = self.epochs
        y = self._values.get(key, np.full(x.size, np.nan))
        e = self._errors.get(key, np.full(x.size, np.nan))
        if first_epoch is not None and x.size:
            keep = x >= first_epoch
            x, y, e = x[keep], y[keep], e[keep]
        if bins is not None and x.size > 2 * bins:
            xd, _ = minmax_decimate(x, y, bins)
            pick = np.searchsorted(x, xd)
            return x[pick], y[pick], e[pick]
        return x, y, e
