"""The prediction path's batching plan: every text scored once, in as little padded work as possible."""

import itertools

import numpy as np
import pytest

from runtime.batching import plan_batches


def cost(lengths, plan, overhead: float, attention: float = 0.0) -> float:
    return sum(overhead + len(idx) * max(lengths[i] for i in idx) * (1 + attention * max(lengths[i] for i in idx))
               for idx in plan)


@pytest.mark.parametrize("n,batch_size", [(1, 64), (7, 3), (100, 64), (300, 32)])
def test_every_text_once_in_batches_of_at_most_batch_size(n, batch_size) -> None:
    lengths = np.random.default_rng(n).integers(3, 129, n)
    plan = plan_batches(lengths, batch_size)
    flat = np.concatenate(plan)
    assert sorted(flat.tolist()) == list(range(n))
    assert all(1 <= len(idx) <= batch_size for idx in plan)
    # shortest first, and no batch's texts overlap another's in length
    assert all(lengths[a].max() <= lengths[b].min() for a, b in zip(plan, plan[1:]))


def test_no_texts_no_batches() -> None:
    assert plan_batches([], 64) == []


def test_equal_lengths_take_as_few_passes_as_batch_size_allows() -> None:
    assert len(plan_batches([20] * 130, 64)) == 3


def test_short_and_long_texts_are_not_padded_together() -> None:
    # One adaptive batch of the service: 30 short units and 2 long ones.
    lengths = [12] * 30 + [120, 118]
    plan = plan_batches(lengths, 64, overhead_tokens=256, attention_per_token=0)
    assert len(plan) == 2 and sorted(plan[1].tolist()) == [30, 31]
    assert cost(lengths, plan, 256) < 256 + len(lengths) * 120
    # A pass that costs more than the padding it saves is not split off.
    assert len(plan_batches(lengths, 64, overhead_tokens=10_000, attention_per_token=0)) == 1


@pytest.mark.parametrize("seed", range(20))
def test_plan_is_the_cheapest_split_of_the_sorted_order(seed) -> None:
    rng = np.random.default_rng(seed)
    n, batch_size, overhead = int(rng.integers(1, 10)), int(rng.integers(1, 6)), int(rng.integers(0, 200))
    attention = float(rng.choice([0.0, 0.002, 0.01]))
    lengths = rng.integers(1, 129, n).tolist()
    order = sorted(range(n), key=lambda i: lengths[i])
    best = None
    for cuts in itertools.product([False, True], repeat=n - 1):
        plan, start = [], 0
        for i, is_cut in enumerate(cuts, start=1):
            if is_cut:
                plan.append(order[start:i])
                start = i
        plan.append(order[start:])
        if all(len(idx) <= batch_size for idx in plan):
            best = min(best if best is not None else float("inf"), cost(lengths, plan, overhead, attention))
    assert cost(lengths, plan_batches(lengths, batch_size, overhead, attention), overhead, attention) == \
        pytest.approx(best)
