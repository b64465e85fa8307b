"""Length-sorted, padding-aware batches: which texts share a forward pass."""

from __future__ import annotations

from typing import Sequence

import numpy as np

# The cost model `plan_batches` weighs padding against another forward pass with, in units of one
# padded token: a pass costs FORWARD_OVERHEAD_TOKENS (mostly reading every weight from memory once,
# which a small batch cannot amortise) plus, per row of L tokens, L x (1 + ATTENTION_PER_TOKEN x L)
# (attention grows with L squared). Fitted for e5-small on 2 cores by `python -m bench.inference`
# ("forward_cost" in bench/results/inference.json: 74 tokens and 0.001; an earlier fit gave 50 and
# 0.002, the values used here); the plans change little for values 2x either side.
FORWARD_OVERHEAD_TOKENS = 50
ATTENTION_PER_TOKEN = 0.002


def plan_batches(lengths: Sequence[int], batch_size: int, overhead_tokens: float = FORWARD_OVERHEAD_TOKENS,
                 attention_per_token: float = ATTENTION_PER_TOKEN) -> list[np.ndarray]:
    """Split texts into padded batches of at most `batch_size` with the least estimated work.

    A batch costs one forward pass (`overhead_tokens`) plus rows x the cost of its longest text,
    since every row is padded to the longest. Cutting the length-sorted order into consecutive windows of
    `batch_size` is near-optimal for a large crawl, but a few dozen texts of mixed length (one
    adaptive batch of the service, one chunk of a page) padded to their longest do about twice
    the real work; an exact split of the sorted order (dynamic programming, O(n x batch_size))
    puts short and long texts in separate passes when that saves more than a pass costs.
    Returns index arrays into `lengths`, shortest texts first.
    """
    n = len(lengths)
    if n == 0:
        return []
    order = np.argsort(np.asarray(lengths), kind="stable")
    sorted_len = np.asarray(lengths, dtype=np.int64)[order]
    best = np.zeros(n + 1, dtype=np.float64)  # best[j]: least cost of the first j sorted texts
    cut = np.zeros(n + 1, dtype=np.int64)  # where the last batch of that plan starts
    for j in range(1, n + 1):
        starts = np.arange(max(0, j - batch_size), j)
        longest = sorted_len[j - 1]
        costs = best[starts] + overhead_tokens + (j - starts) * longest * (1 + attention_per_token * longest)
        k = int(np.argmin(costs))
        best[j], cut[j] = costs[k], starts[k]
    bounds, j = [], n
    while j > 0:
        bounds.append((int(cut[j]), j))
        j = int(cut[j])
    return [order[a:b] for a, b in reversed(bounds)]
