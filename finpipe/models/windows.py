"""Sequence windows over a dense panel as a PyTorch Dataset.

`WindowDataset` serves windows by indexing into one standardised array, so memory stays
linear in the panel size whatever the window length.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from finpipe.models.panel_data import PanelData, TargetScaler


class WindowDataset(Dataset):
    """Samples (window [L, F], target [H], target mask [H]) gathered lazily by fancy indexing.

    `features` is one standardised array [L - 1 + T, N, F] with L - 1 zero rows in front, so
    the window of (date t, ticker i) is rows t .. t + L - 1 of ticker i: days before the panel
    starts read as zeros (the training median). Nothing per window is materialised.
    """

    def __init__(
        self,
        features: torch.Tensor,
        targets: torch.Tensor,
        target_mask: torch.Tensor,
        date_idx: torch.Tensor,
        ticker_idx: torch.Tensor,
        window: int,
    ) -> None:
        self.features = features
        self.targets = targets
        self.target_mask = target_mask
        self.date_idx = date_idx
        self.ticker_idx = ticker_idx
        self.window = window
        n_tickers = features.shape[1]
        self._rows = features.reshape(-1, features.shape[2])
        self._offsets = torch.arange(window, device=features.device) * n_tickers
        self._n_tickers = n_tickers

    def __len__(self) -> int:
        return len(self.date_idx)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, y, m = self.gather(torch.as_tensor([k]))
        return x[0], y[0], m[0]

    def __getitems__(self, ks: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.gather(torch.as_tensor(ks))

    def gather(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Batch for sample ids: windows [B, L, F], targets [B, H], target mask [B, H]."""
        ids = ids.to(self.date_idx.device)
        d = self.date_idx[ids]
        t = self.ticker_idx[ids]
        flat = (d * self._n_tickers + t)[:, None] + self._offsets
        x = self._rows.index_select(0, flat.reshape(-1))
        x = x.view(len(ids), self.window, self._rows.shape[1])
        return x, self.targets[d, t], self.target_mask[d, t]


def window_dataset(
    standardised: torch.Tensor,
    panel: PanelData,
    target_scaler: TargetScaler | None,
    window: int,
    require_target: bool,
) -> WindowDataset:
    """WindowDataset over a view's samples; `standardised` is the padded feature tensor."""
    d_idx, t_idx = panel.sample_index(require_target=require_target)
    device = standardised.device
    if target_scaler is not None:
        scaled = target_scaler.transform(panel.targets)
        mask = np.isfinite(scaled)
        targets = torch.from_numpy(np.where(mask, scaled, 0.0).astype(np.float32))
    else:
        mask = np.zeros(panel.targets.shape, bool)
        targets = torch.zeros(panel.targets.shape, dtype=torch.float32)
    return WindowDataset(
        standardised,
        targets.to(device),
        torch.from_numpy(mask).to(device),
        torch.from_numpy(d_idx).to(device),
        torch.from_numpy(t_idx).to(device),
        window,
    )
