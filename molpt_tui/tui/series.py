"""A numpy mirror of `History` for plotting.

History keeps Python lists (cheap appends from any thread). Converting a million-element list
to an array on every redraw would cost ~30 ms per series, so the mirror copies only what
changed since the last sync: usually the few epochs of one batch, or the tail after a resume
truncated the history.
"""
from __future__ import annotations

import math

import numpy as np

from molpt_tui.training.history import History

from .decimate import minmax_decimate

BASE_KEYS = ("loss", "fwd_energy", "fwd_logdet", "inv_energy", "inv_logdet")
# The two halves of the loss, as the PNG plots them.
DERIVED_KEYS = {"fwd_term": ("fwd_energy", "fwd_logdet"), "inv_term": ("inv_energy", "inv_logdet")}
KEYS = BASE_KEYS + tuple(DERIVED_KEYS)
# Extremes are pre-aggregated per block of this many epochs, so decimating a million points for
# a redraw reads ~2000 block summaries instead of the raw series: redraw cost stops growing
# with the length of the run.
BLOCK = 512


class SeriesStore:
    def __init__(self, capacity: int = 1024) -> None:
        self._capacity = max(int(capacity), 16)
        self.n = 0
        self.epochs = np.zeros(self._capacity, dtype=np.int64)
        self._data = {key: np.zeros(self._capacity) for key in KEYS}
        self._nb = 0  # complete blocks summarised
        nblocks = self._capacity // BLOCK + 1
        self._bmin = {key: np.zeros(nblocks) for key in KEYS}
        self._bmax = {key: np.zeros(nblocks) for key in KEYS}
        self._imin = {key: np.zeros(nblocks, dtype=np.int64) for key in KEYS}
        self._imax = {key: np.zeros(nblocks, dtype=np.int64) for key in KEYS}

    def __len__(self) -> int:
        return self.n

    def _grow(self, needed: int) -> None:
        if needed <= self._capacity:
            return
        capacity = self._capacity
        while capacity < needed:
            capacity *= 2
        epochs = np.zeros(capacity, dtype=np.int64)
        epochs[: self.n] = self.epochs[: self.n]
        self.epochs = epochs
        for key, old in self._data.items():
            new = np.zeros(capacity)
            new[: self.n] = old[: self.n]
            self._data[key] = new
        nblocks = capacity // BLOCK + 1
        tables: tuple[dict[str, np.ndarray], ...] = (self._bmin, self._bmax, self._imin, self._imax)
        for table in tables:
            for key, summary in table.items():
                grown: np.ndarray = np.zeros(nblocks, dtype=summary.dtype)
                grown[: self._nb] = summary[: self._nb]
                table[key] = grown
        self._capacity = capacity

    def sync(self, history: History, start: int = 0) -> None:
        """Copy history[start:] into the arrays; everything before `start` is unchanged."""
        n = len(history.epochs)
        start = max(0, min(start, self.n, n))
        self._grow(n)
        if n > start:
            self.epochs[start:n] = history.epochs[start:]
            for key in BASE_KEYS:
                self._data[key][start:n] = history.series[key][start:n]
            # inf - inf is NaN, which the plots drop anyway; no need to warn about it.
            with np.errstate(invalid="ignore", over="ignore"):
                for key, (energy, logdet) in DERIVED_KEYS.items():
                    np.subtract(self._data[energy][start:n], self._data[logdet][start:n],
                                out=self._data[key][start:n])
        self.n = n
        self._summarise(min(start // BLOCK, self._nb), n // BLOCK)

    def _summarise(self, b0: int, b1: int) -> None:
        """Min/max (value and index) of blocks b0..b1-1; non-finite values never win."""
        self._nb = b1
        if b1 <= b0:
            return
        offsets = np.arange(b0, b1, dtype=np.int64) * BLOCK
        for key in KEYS:
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

    def window_start(self, last_epochs: int | None) -> int:
        if last_epochs is None or not self.n:
            return 0
        first = int(self.epochs[self.n - 1]) - int(last_epochs) + 1
        return int(np.searchsorted(self.epochs[: self.n], first, side="left"))

    def decimated(self, key: str, last_epochs: int | None, bins: int) -> tuple[np.ndarray, np.ndarray]:
        """Like `minmax_decimate(*view(key, last_epochs), bins)`, in time independent of n."""
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
        i = self.window_start(last_epochs)
        return self.epochs[i: self.n], self._data[key][i: self.n]
