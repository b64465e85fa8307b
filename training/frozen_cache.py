"""Compute the frozen half of a fine-tune once per unit instead of once per step.

With `model.freeze_layers: N` and dropout off, the embeddings and the lowest N layers map a
unit to the same hidden states in every epoch. `FrozenLayersCache` computes them once, in
length-sorted inference batches, and while `active()` the body's embeddings return the
stored states and its lowest N layers pass them through, so each training and evaluation
step runs only the layers that learn. Parameters, state dicts and checkpoints are untouched:
only the `forward` of those modules is replaced (on the instances), and restored on exit.

Outputs at real tokens are the same as without the cache (padding positions hold zeros
instead of the lower layers' outputs at pad tokens, which attention masks out and mean
pooling skips); `tests/training/test_train.py` checks logits and gradients against the full model.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Iterator, Sequence

log = logging.getLogger(__name__)

# Above this the cache is skipped (and training runs the frozen layers every step as before):
# ~200 MB for our 4,100 units of ~36 tokens with e5-small's 384-wide hidden states.
MAX_CACHE_BYTES = 4 << 30


def cache_unavailable_reason(model, count: int) -> str | None:
    """Why the frozen layers' outputs cannot be cached for this model, or None if they can."""
    if count <= 0:
        return "no layers are frozen"
    config = model.config
    rates = [getattr(config, name, None) for name in ("hidden_dropout_prob", "attention_probs_dropout_prob")]
    if any(rate is None for rate in rates):
        return (f"{type(config).__name__} does not state a BERT body's dropout rates, "
                "so the frozen layers may not be fixed")
    if any(rate > 0 for rate in rates):
        return "dropout is on in the frozen layers, so their output differs between epochs (set model.dropout: 0)"
    return None


def _pass_through(hidden_states, *args, **kwargs):
    return hidden_states


class FrozenLayersCache:
    """Hidden states after a model body's embeddings and lowest `count` layers, keyed by token ids."""

    def __init__(self, model, count: int, pad_token_id: int, padding_side: str = "right",
                 states: dict | None = None) -> None:
        """`states`: a store to read and extend, shared by models whose frozen layers are the same pretrained
        weights with the same tokenizer (the folds of one --cv run); by default a new one."""
        self.body = model.base_model
        self.layers = self.body.encoder.layer
        self.count, self.pad_token_id, self.padding_side = count, pad_token_id, padding_side
        self.states: dict[tuple[int, ...], "object"] = {} if states is None else states

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.states.values())

    def _unpadded(self, row: Sequence[int]) -> tuple[int, ...]:
        ids = list(row)
        if self.padding_side == "left":
            while ids and ids[0] == self.pad_token_id:
                ids.pop(0)
        else:
            while ids and ids[-1] == self.pad_token_id:
                ids.pop()
        return tuple(ids)

    def _slot(self, width: int, length: int) -> slice:
        """Where a unit of `length` tokens sits in a row padded to `width`."""
        return slice(width - length, width) if self.padding_side == "left" else slice(0, length)

    @contextlib.contextmanager
    def _patched(self, modules, forward) -> Iterator[None]:
        for module in modules:
            module.forward = forward
        try:
            yield
        finally:
            for module in modules:
                del module.forward  # the class's forward again

    def fill(self, sequences: Sequence[Sequence[int]], batch_size: int = 64, bf16: bool = False,
             progress: bool = False) -> float:
        """Compute and store the states of every sequence not stored yet; returns the seconds it took."""
        import torch
        from tqdm.auto import tqdm

        todo = sorted({tuple(s) for s in sequences} - self.states.keys(), key=len)
        device = next(self.body.parameters()).device
        started, was_training = time.perf_counter(), self.body.training
        self.body.eval()
        try:
            # The body's own forward (its attention-mask handling included) with the upper layers skipped.
            with self._patched(self.layers[self.count:], _pass_through), torch.no_grad(), \
                    torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                for start in tqdm(range(0, len(todo), batch_size), desc="frozen layers, once per unit",
                                  unit="batch", disable=not progress):
                    batch = todo[start:start + batch_size]
                    width = max(len(ids) for ids in batch)
                    ids = torch.full((len(batch), width), self.pad_token_id, dtype=torch.long)
                    mask = torch.zeros((len(batch), width), dtype=torch.long)
                    slots = [self._slot(width, len(seq)) for seq in batch]
                    for i, (seq, where) in enumerate(zip(batch, slots)):
                        ids[i, where] = torch.tensor(seq)
                        mask[i, where] = 1
                    hidden = self.body(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
                    hidden = hidden.float()
                    for i, (seq, where) in enumerate(zip(batch, slots)):
                        self.states[seq] = hidden[i, where].clone()
        finally:
            self.body.train(was_training)
        return time.perf_counter() - started

    def _lookup(self, input_ids=None, **kwargs):

        rows = [self.states.get(self._unpadded(row)) for row in input_ids.tolist()]
        if any(state is None for state in rows):
            raise RuntimeError("a unit reached training that is not in the frozen-layer cache; "
                               "FrozenLayersCache.fill must see every training and validation unit")
        width = input_ids.shape[1]
        out = rows[0].new_zeros((len(rows), width, rows[0].shape[-1]))
        for i, state in enumerate(rows):
            out[i, self._slot(width, state.shape[0])] = state
        return out

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Within the block, the model's embeddings + lowest layers read the stored states."""
        with self._patched([self.body.embeddings], self._lookup), \
                self._patched(self.layers[:self.count], _pass_through):
            yield
