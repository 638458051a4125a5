"""Causal window and recursion operators over a wide (dates x tickers) panel, in NumPy.

Every operator takes float64 arrays of shape (n_dates, n_tickers), time along axis 0, and is
causal: the value at date t reads dates <= t only. Each ticker is a column and no operator
mixes columns, so a missing value (NaN: a ticker not yet listed, or a gap) never leaks across
tickers. Loops run over lags or over log2(n_dates) doubling steps, never over dates or tickers.

Windows are strict: a window of w dates that holds a missing value gives NaN (pandas'
`rolling(w, min_periods=w)`). Recursive filters (EWM, Wilder, GARCH) carry their state across
gaps instead, as noted on each.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided, sliding_window_view
from scipy.signal import lfilter

# Cells per sort batch in `rolling_quantiles`: keeps the float32 window copies near 8 MB.
_SORT_BATCH_CELLS = 2_000_000
# Windows up to this length are sorted by a comparator network on whole arrays instead.
_NETWORK_MAX_WINDOW = 12


def lag(x: np.ndarray, k: int) -> np.ndarray:
    """x shifted k dates later (the value of date t - k at t); NaN where t < k."""
    if k == 0:
        return x.copy()
    out = np.full(x.shape, np.nan)
    if k < len(x):
        out[k:] = x[: len(x) - k]
    return out


def divide(num: np.ndarray, den: np.ndarray | float) -> np.ndarray:
    """num / den with IEEE results (inf, NaN) and no warnings; the engine clears infinities."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.divide(num, den)


def log(x: np.ndarray) -> np.ndarray:
    """Natural log; non-positive inputs give NaN or -inf, which the engine clears."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(x)


def first_valid(x: np.ndarray) -> np.ndarray:
    """Index of each column's first finite value (n_dates where a column has none)."""
    valid = np.isfinite(x)
    first = valid.argmax(axis=0)
    first[~valid.any(axis=0)] = len(x)
    return first


def ffill(x: np.ndarray) -> np.ndarray:
    """Carry each column's last finite value forward over later missing dates (causal)."""
    valid = np.isfinite(x)
    index = np.where(valid, np.arange(len(x))[:, None], 0)
    np.maximum.accumulate(index, axis=0, out=index)
    out = np.take_along_axis(x, index, axis=0)
    out[np.cumsum(valid, axis=0) == 0] = np.nan
    return out


def _tiles(a: np.ndarray, halo: int, block: int, fill) -> np.ndarray:
    """(n_blocks, halo + block, n) overlapping tiles of a (T, n) array: tile b holds dates
    b * block - halo .. (b + 1) * block - 1, padded with `fill` before 0 and after T - 1."""
    t, n = a.shape
    n_blocks = -(-t // block)
    padded = np.full((halo + n_blocks * block, n), fill, dtype=a.dtype)
    padded[halo : halo + t] = a
    step, row = padded.strides
    return as_strided(
        padded,
        shape=(n_blocks, halo + block, n),
        strides=(block * step, step, row),
        writeable=False,
    )


def _first_in_tile(tiles: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Each tile's first valid value per column (0 where a tile has none): (n_blocks, 1, n)."""
    first = valid.argmax(axis=1)[:, None, :]
    return np.nan_to_num(np.take_along_axis(tiles, first, axis=1))


class RollingMoments:
    """Rolling sum, mean, variance, covariance, correlation and linear trend of one or two series.

    Windows of up to `max_window` dates are read from prefix sums, computed per tile of
    `block` dates (plus the `max_window - 1` dates before it) on the series minus a reference
    value per tile: the tile's first observed value, which precedes every full window in it,
    so the statistic at t still reads only dates <= t. Keeping the running totals short and
    centred avoids the cancellation that whole-history prefix sums suffer on price levels.
    Both series are masked where either is missing; a window with a missing value gives NaN.
    """

    def __init__(
        self, x: np.ndarray, y: np.ndarray | None = None, *, max_window: int, block: int = 256
    ) -> None:
        self._t, self._n = x.shape
        self._halo = max_window - 1
        self._block = block
        valid = np.isfinite(x) if y is None else np.isfinite(x) & np.isfinite(y)
        self._valid = _tiles(valid, self._halo, block, False)
        self._count = self._prefix(self._valid.astype(np.float64))
        self._ref: dict[str, np.ndarray] = {}
        self._centered: dict[str, np.ndarray] = {}
        self._prefixes: dict[str, np.ndarray] = {}
        self._sums: dict[tuple[str, int], np.ndarray] = {}
        self._partial: dict[int, np.ndarray] = {}
        for key, series in (("x", x), ("y", y)):
            if series is not None:
                tiles = _tiles(series, self._halo, block, np.nan)
                self._ref[key] = _first_in_tile(tiles, self._valid)
                self._centered[key] = np.where(self._valid, tiles - self._ref[key], 0.0)

    @staticmethod
    def _prefix(tiles: np.ndarray) -> np.ndarray:
        out = np.zeros((tiles.shape[0], tiles.shape[1] + 1, tiles.shape[2]))
        np.cumsum(tiles, axis=1, out=out[:, 1:])
        return out

    def _span(self, prefix: np.ndarray, w: int) -> np.ndarray:
        """Sum over the w dates ending at each of a tile's own dates: (n_blocks, block, n)."""
        h, b = self._halo, self._block
        return prefix[:, h + 1 : h + 1 + b] - prefix[:, h + 1 - w : h + 1 - w + b]

    def _window(self, key: str, w: int) -> np.ndarray:
        """Windowed sum of a centred product ("x", "xx", "xy", "jx", ...); cached, read-only."""
        if w > self._halo + 1:
            raise ValueError(f"window {w} exceeds max_window {self._halo + 1}")
        if (key, w) not in self._sums:
            if key not in self._prefixes:
                if key == "jx":
                    local_index = np.arange(self._halo + self._block, dtype=np.float64)
                    product = self._centered["x"] * local_index[:, None]
                elif len(key) == 2:
                    product = self._centered[key[0]] * self._centered[key[1]]
                else:
                    product = self._centered[key]
                self._prefixes[key] = self._prefix(product)
            self._sums[key, w] = self._span(self._prefixes[key], w)
        return self._sums[key, w]

    def _untile(self, values: np.ndarray, w: int) -> np.ndarray:
        """A fresh tiled result back to (T, n), NaN where the window is not fully observed."""
        if w not in self._partial:
            self._partial[w] = self._span(self._count, w) < w
        values[self._partial[w]] = np.nan
        return values.reshape(-1, self._n)[: self._t]

    def sum(self, w: int, key: str = "x") -> np.ndarray:
        return self._untile(self._window(key, w) + w * self._ref[key], w)

    def mean(self, w: int, key: str = "x") -> np.ndarray:
        return self._untile(self._window(key, w) / w + self._ref[key], w)

    def _ss(self, w: int, key: str) -> np.ndarray:
        """Sum of squared deviations from the window mean; exactly 0 where it is rounding noise.

        The noise of a prefix-sum difference is a few ulps of the running total, so a spread
        below that is a flat window (pandas also reports 0 there). Cached, like `_window`.
        """
        if (key + "_ss", w) not in self._sums:
            s = self._window(key, w)
            ss = s * s
            ss /= -w
            ss += self._window(key + key, w)
            h, b = self._halo, self._block
            total = self._prefixes[key + key][:, h + 1 : h + 1 + b]
            ss[ss <= 64 * np.finfo(np.float64).eps * total] = 0.0
            self._sums[key + "_ss", w] = ss
        return self._sums[key + "_ss", w]

    def var(self, w: int, key: str = "x", ddof: int = 1) -> np.ndarray:
        return self._untile(self._ss(w, key) / (w - ddof), w)

    def std(self, w: int, key: str = "x", ddof: int = 1) -> np.ndarray:
        return self._untile(np.sqrt(self._ss(w, key) / (w - ddof)), w)

    def _sxy(self, w: int) -> np.ndarray:
        return self._window("xy", w) - self._window("x", w) * self._window("y", w) / w

    def cov(self, w: int, ddof: int = 1) -> np.ndarray:
        return self._untile(self._sxy(w) / (w - ddof), w)

    def corr(self, w: int) -> np.ndarray:
        """Pearson correlation; NaN where either side is flat (Qlib's Corr does the same)."""
        scale = self._ss(w, "x") * self._ss(w, "y")
        np.sqrt(scale, out=scale)
        out = np.full(scale.shape, np.nan)
        np.divide(self._sxy(w), scale, out=out, where=scale > 0)
        np.clip(out, -1.0, 1.0, out=out)
        return self._untile(out, w)

    def beta(self, w: int) -> np.ndarray:
        """Least-squares slope of x on y (cov / var of y); NaN where y is flat."""
        ssy = self._ss(w, "y")
        out = divide(self._sxy(w), ssy)
        out[ssy == 0] = np.nan
        return self._untile(out, w)

    def trend(self, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Least-squares line of x on the time index 0..w-1 over each window.

        Returns (slope per date, R^2, residual of the last date): Qlib's Slope, Rsquare and
        Resi. R^2 is NaN on a flat window.
        """
        h, b = self._halo, self._block
        sx = self._window("x", w)
        start = ((h - w + 1) + np.arange(b, dtype=np.float64))[:, None]
        cov = (self._window("jx", w) - start * sx) - (w - 1) / 2.0 * sx
        sjj = w * (w * w - 1) / 12.0
        slope = cov / sjj
        ss = self._ss(w, "x")
        rsquare = np.minimum(divide(cov * cov, sjj * ss), 1.0)
        rsquare[ss == 0] = np.nan
        last = self._centered["x"][:, h : h + b]
        resid = last - (sx / w + slope * (w - 1) / 2.0)
        return self._untile(slope, w), self._untile(rsquare, w), self._untile(resid, w)


def rolling_rank(x: np.ndarray, windows: tuple[int, ...]) -> dict[int, np.ndarray]:
    """Percentile of x[t] among the last w values (pandas' `rank(pct=True)`, ties averaged).

    Counts, lag by lag, the earlier values above and below x[t]; one pass serves every window.
    """
    t = len(x)
    above = np.zeros(x.shape, dtype=np.int16)
    below = np.zeros(x.shape, dtype=np.int16)
    hit = np.empty(x.shape, dtype=bool)
    count = np.zeros((t + 1, *x.shape[1:]), dtype=np.int32)
    np.cumsum(np.isfinite(x), axis=0, out=count[1:])
    out = {w: np.full(x.shape, np.nan) for w in windows if w > t}
    for k in range(1, min(max(windows), t)):
        np.greater(x[: t - k], x[k:], out=hit[k:])
        above[k:] += hit[k:]
        np.less(x[: t - k], x[k:], out=hit[k:])
        below[k:] += hit[k:]
        if k + 1 in windows:
            w = k + 1
            rank = ((w + 1) / 2.0 + (below.astype(np.float64) - above) / 2.0) / w
            rank[: w - 1] = np.nan
            rank[w - 1 :][(count[w:] - count[: t + 1 - w]) < w] = np.nan
            out[w] = rank
    return out


def rolling_extremes(
    x: np.ndarray, windows: tuple[int, ...], kind: str
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Rolling max (kind="max") or min and its 1-based position in the window (1 = oldest).

    Sparse-table doubling: extremes over 2^j dates come from two halves, and a window of w
    is the union of two overlapping 2^j blocks, so the cost does not grow with w. Ties go to
    the oldest date (NumPy's argmax/argmin). NaN anywhere in the window gives NaN.
    """
    combine = np.maximum if kind == "max" else np.minimum  # both propagate NaN
    better = np.greater if kind == "max" else np.less
    time_index = np.broadcast_to(np.arange(len(x), dtype=np.float64)[:, None], x.shape)
    levels = {1: (x, time_index)}
    span = 1
    while span * 2 <= max(windows):
        levels[span * 2] = _merge_blocks(*levels[span], span, combine, better)
        span *= 2
    out = {}
    for w in windows:
        span = 1 << (w.bit_length() - 1)
        value, pos = levels[span]
        if w != span:
            value, pos = _merge_blocks(value, pos, w - span, combine, better)
        value = value.copy()
        value[: w - 1] = np.nan
        pos = pos - time_index + w
        pos[np.isnan(value)] = np.nan
        out[w] = (value, pos)
    return out


def _merge_blocks(value, pos, offset, combine, better):
    """Combine each block ending at t with the one ending at t - offset (the older one).

    The newer block's position wins only when strictly better, so ties keep the oldest.
    """
    t = len(value)
    merged = np.full(value.shape, np.nan)
    where = np.zeros(value.shape)
    if offset >= t:
        return merged, where
    new_v, old_v = value[offset:], value[: t - offset]
    combine(new_v, old_v, out=merged[offset:])
    where[offset:] = np.where(better(new_v, old_v), pos[offset:], pos[: t - offset])
    return merged, where


def sorting_network(n: int) -> list[tuple[int, int]]:
    """Comparators (i, j), i < j, of Batcher's odd-even merge sort for n wires.

    Built for the next power of two; comparators that touch a wire >= n are dropped, which is
    exact when the missing wires hold +inf (they never move below n).
    """
    size = 1 << max(n - 1, 0).bit_length()
    pairs = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return [(i, j) for i, j in pairs if j < n]


def _order_statistics(y: np.ndarray, w: int, ranks: set[int]) -> dict[int, np.ndarray]:
    """Order statistics of the last w values by a sorting network over w lagged arrays:
    exact float64 and cheap for short windows. NaN in the window propagates to all of them."""
    t = len(y)
    wires = [y[w - 1 - k : t - k].copy() for k in range(w)]
    spare = np.empty_like(wires[0])
    for i, j in sorting_network(w):
        np.minimum(wires[i], wires[j], out=spare)
        np.maximum(wires[i], wires[j], out=wires[j])
        wires[i], spare = spare, wires[i]
    return {r: wires[r] for r in ranks}


def rolling_quantiles(
    y: np.ndarray, w: int, quantiles: tuple[float, ...], block: int = 64
) -> list[np.ndarray]:
    """Rolling quantiles with linear interpolation (pandas' and NumPy's default).

    Short windows go through a sorting network in float64. Longer ones are sorted at float32
    speed as keys y - ref, where ref is the first observed value of a tile of `block` dates
    plus the w - 1 before them (a date before every full window in the tile, so the result
    stays causal); the keys span only the tile's price range, so they keep far more
    precision than the float32 price level would. NaN anywhere in the window gives NaN.
    """
    t, n = y.shape
    spots = [q * (w - 1) for q in quantiles]
    if w <= _NETWORK_MAX_WINDOW:
        outs = [np.full((t, n), np.nan) for _ in quantiles]
        if w > t:
            return outs
        needed = {int(np.floor(s)) for s in spots} | {
            min(int(np.floor(s)) + 1, w - 1) for s in spots
        }
        order = _order_statistics(y, w, needed)
        for out, spot in zip(outs, spots, strict=True):
            lo = int(np.floor(spot))
            value = (
                order[lo] if spot == lo else order[lo] + (spot - lo) * (order[lo + 1] - order[lo])
            )
            out[w - 1 :] = value
        return outs
    tiles = _tiles(y, w - 1, block, np.nan)
    ref = _first_in_tile(tiles, np.isfinite(tiles))  # (n_blocks, 1, n)
    keys = np.empty((n, tiles.shape[0], tiles.shape[1]), dtype=np.float32)
    np.subtract(tiles.transpose(2, 0, 1), ref.transpose(2, 0, 1), out=keys)  # then rounded
    windows = sliding_window_view(keys, w, axis=2)  # (n, n_blocks, block, w)
    outs = [np.empty((n, tiles.shape[0], block)) for _ in quantiles]
    columns_per_batch = max(1, _SORT_BATCH_CELLS // (tiles.shape[0] * block * w))
    for c0 in range(0, n, columns_per_batch):
        columns = slice(c0, c0 + columns_per_batch)
        ordered = np.sort(windows[columns], axis=-1)
        has_nan = np.isnan(ordered[..., -1])
        for out, spot in zip(outs, spots, strict=True):
            lo = int(np.floor(spot))
            value = ordered[..., lo].astype(np.float64)
            if spot > lo:
                value += (spot - lo) * (ordered[..., lo + 1] - value)
            value[has_nan] = np.nan
            out[columns] = value
    base = ref[:, 0, :]  # (n_blocks, n)
    return [(out.transpose(1, 2, 0) + base[:, None, :]).reshape(-1, n)[:t] for out in outs]


def ewm(x: np.ndarray, alpha: float, min_periods: int = 1) -> np.ndarray:
    """Exponentially weighted mean, pandas' `ewm(alpha=alpha, adjust=False)`, per column.

    Starts at each column's first finite value; later missing values are forward-filled (the
    series is taken to stand still over a gap). NaN until `min_periods` values were seen.
    """
    filled = ffill(x)
    first = first_valid(x)
    started = np.arange(len(x))[:, None] >= first[None, :]
    drive = np.where(started, alpha * filled, 0.0)
    columns = np.nonzero(first < len(x))[0]
    drive[first[columns], columns] = filled[first[columns], columns]
    out = lfilter([1.0], [1.0, alpha - 1.0], drive, axis=0)
    out[np.cumsum(np.isfinite(x), axis=0) < max(min_periods, 1)] = np.nan
    return out


def linear_scan(coef: np.ndarray, drive: np.ndarray) -> np.ndarray:
    """Solve s[t] = coef[t] * s[t-1] + drive[t] along the dates axis with s[-1] = 0.

    `coef` is (T, n), or (1, n) for a coefficient constant over time; `drive` is (..., T, n).
    A parallel-prefix (Hillis-Steele) scan over affine maps in log2(T) passes: after the pass
    with stride k each cell holds the recursion over its last 2k dates, so every cell reads
    only earlier dates. Coefficients may differ per cell: per-ticker GARCH persistence, 1 to
    hold the state over a gap, 0 to restart it.
    """
    state = np.array(drive, dtype=np.float64, copy=True)
    t = state.shape[-2]
    constant = coef.shape[-2] == 1
    factor = np.array(
        coef if constant else np.broadcast_to(coef, state.shape[-2:]), dtype=np.float64
    )
    k = 1
    while k < t:
        if constant:
            state[..., k:, :] += factor * state[..., : t - k, :]
            factor = factor * factor
        else:
            state[..., k:, :] += factor[k:] * state[..., : t - k, :]
            factor[k:] *= factor[: t - k].copy()
        k *= 2
    return state
