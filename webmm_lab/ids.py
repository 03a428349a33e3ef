"""Token ids: the one range check that every model, tokenizer and palette shares."""
from __future__ import annotations

import torch


def check_ids(ids: torch.Tensor, n: int, what: str = "token ids") -> None:
    """Raise a ValueError if any of `ids` (any shape) lies outside [0, n); empty is fine."""
    if ids.numel() == 0:
        return
    lo, hi = torch.aminmax(ids)                                              # one sync, not two
    if lo < 0 or hi >= n:
        raise ValueError(f"{what} must be in [0, {n}), got [{int(lo)}, {int(hi)}]: they come from "
                         f"another vocabulary or codebook than this one's (encode with its own)")
