"""Evidence: which character spans of a cleaned unit drove each direction the model gave it.

Both halves of the served model are attributed to characters of the cleaned text, then combined:

- the TF-IDF half exactly: its logit for a direction is the intercept plus, over the unit's character
  n-grams, tf-idf value x coefficient; each n-gram's term is shared out over its occurrences and their
  characters, so a character's value is its part of that sum;
- the encoder half with Layer Integrated Gradients (Captum) on the input embeddings, against a baseline
  that puts the padding token where the unit's tokens are (the `query: ` prefix and the special tokens
  stay as they are, so they get no attribution); a token's value is shared out over the characters of
  its offset span, whitespace excluded.

Only positive contributions are evidence: a character counts when the net contribution of the n-grams
or tokens over it pushes the direction up. Each half's positive part is normalised to sum to 1, and the
halves are weighted by their share of the fused probability (encoder p_e, TF-IDF p_t, fused (p_e + p_t)/2:
shares p_e / (p_e + p_t) and p_t / (p_e + p_t)). Characters at or above `char_floor` of the strongest one
form spans; a span's weight is the sum of its characters', i.e. its share of the direction's evidence.

Attribution needs the torch weights in fp32: a classifier loaded for ONNX Runtime has released them
(Classifier.release_torch_weights), and is refused with a message saying so. An int8 or bf16 classifier
is attributed on its fp32 weights, while the shares come from the probabilities it served.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from runtime.decide import Prediction

# Integration steps of Layer Integrated Gradients, chosen by measurement (python -m bench.evidence steps,
# docs/evidence.md): against 128 steps on real units, 8 steps still leave a median completeness gap of 14% of
# the logit change and move the encoder's top span in 1 of 10 cases; 16 leave 1.4% and the served evidence's
# span set unchanged, for an eighth of 128's work.
N_STEPS = 16


class EvidenceError(ValueError):
    """Evidence cannot be computed with this classifier; the message says what to do."""


@dataclass(frozen=True)
class EvidenceSettings:
    top_k: int = 3  # spans per direction, strongest first
    min_weight: float = 0.05  # a span with less of the direction's evidence than this is left out
    char_floor: float = 0.25  # a character joins a span at this share of the strongest character's weight
    n_steps: int = N_STEPS
    rows_per_call: int = 8  # (unit, direction) rows integrated together; x n_steps sequences each
    # Sequences in one forward and backward pass: rows x n_steps at once would hold gigabytes of activations
    # (8 rows x 128 steps x 128 tokens of e5 took over 6 GB).
    max_sequences: int = 64

    def __post_init__(self) -> None:
        if min(self.top_k, self.n_steps, self.rows_per_call, self.max_sequences) < 1:
            raise ValueError("top_k, n_steps, rows_per_call and max_sequences must be positive")
        if not 0 <= self.min_weight <= 1 or not 0 < self.char_floor <= 1:
            raise ValueError("min_weight must be in [0, 1] and char_floor in (0, 1]")


@dataclass(frozen=True)
class Span:
    start: int  # offsets into the cleaned text: text[start:end] == self.text
    end: int
    text: str
    weight: float

    def to_dict(self) -> dict:
        return {"start": self.start, "end": self.end, "text": self.text, "weight": self.weight}


_WHITESPACES = re.compile(r"\s\s+")  # what scikit-learn's char analyzer collapses to one space


def lexical_contributions(lexical, text: str) -> np.ndarray:
    """(len(text), directions): each character's part of the TF-IDF half's logit minus its intercept.

    Rows sum to exactly that logit term: n-grams are enumerated as scikit-learn's char analyzer does
    (lowercased, runs of whitespace as one space), each tracked back to the characters it came from.
    """
    vectorizer = lexical.vectorizer
    out = np.zeros((len(text), lexical.weights.shape[1]), dtype=np.float64)
    if not text:
        return out
    # The analyzer's string, one entry per character of it, with the cleaned-text index it came from
    # (str.lower can turn one character into two).
    chars: list[str] = []
    owner: list[int] = []
    for i, ch in enumerate(text):
        for piece in ch.lower() if vectorizer.lowercase else ch:
            chars.append(piece)
            owner.append(i)
    joined = "".join(chars)
    for match in reversed(list(_WHITESPACES.finditer(joined))):  # collapse, keeping the first one's owner
        a, b = match.span()
        chars[a:b] = [" "]
        owner[a:b] = [owner[a]]
    joined = "".join(chars)
    row = vectorizer.transform([joined]).tocsr()
    value = dict(zip(row.indices.tolist(), row.data.tolist()))
    vocabulary = vectorizer.vocabulary_
    low, high = vectorizer.ngram_range
    occurrences: dict[int, list[int]] = {}
    for n in range(low, high + 1):
        for i in range(len(joined) - n + 1):
            feature = vocabulary.get(joined[i:i + n])
            if feature is not None and feature in value:
                occurrences.setdefault(feature, []).append(i * 8 + n)  # start and length in one int
    for feature, places in occurrences.items():
        term = value[feature] * lexical.weights[feature] / len(places)  # one occurrence's share, per direction
        for packed in places:
            i, n = divmod(packed, 8)
            covered = sorted(set(owner[i:i + n]))
            out[covered] += term / len(covered)
    return out


def spans_from_weights(text: str, weights: np.ndarray, settings: EvidenceSettings) -> list[Span]:
    """Merged spans of characters whose weight is at least char_floor of the strongest, strongest first."""
    peak = float(weights.max()) if len(weights) else 0.0
    if peak <= 0:
        return []
    keep = (weights >= settings.char_floor * peak) & (weights > 0)
    spans: list[Span] = []
    i = 0
    while i < len(text):
        if not keep[i]:
            i += 1
            continue
        j = i
        while j < len(text) and keep[j]:
            j += 1
        a, b = i, j
        while a < b and text[a].isspace():  # a span never starts or ends on a space
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if b > a:
            spans.append(Span(a, b, text[a:b], round(float(weights[a:b].sum()), 4)))
        i = j
    spans.sort(key=lambda s: (-s.weight, s.start))
    return [s for s in spans if s.weight >= settings.min_weight][: settings.top_k]


def _positive_share(values: np.ndarray) -> np.ndarray:
    positive = np.clip(values, 0, None)
    total = positive.sum()
    return positive / total if total > 0 else positive


class Explainer:
    """Evidence for a classifier's predictions of cleaned units."""

    def __init__(self, classifier, settings: EvidenceSettings | None = None) -> None:
        self.classifier = classifier
        self.settings = settings or EvidenceSettings()
        # Integrated Gradients' completeness gap |sum of attributions - (F(unit) - F(baseline))| per row of the
        # last encoder_contributions call, in its order: how far n_steps is from the exact integral.
        self.last_deltas: list[float] = []

    def _check_weights(self) -> None:
        if getattr(self.classifier, "_released_from", None) is not None:
            raise EvidenceError(
                f"evidence needs the model's torch weights, which this {self.classifier.precision} classifier "
                "released for ONNX Runtime; load it with a torch precision (fp32, bf16, int8) to explain")

    def explain(self, texts: Sequence[str], predictions: Sequence[Prediction]) -> list[dict[str, list[dict]]]:
        """For each cleaned text, {direction: [span dict, ...]} over the directions of its prediction."""
        c = self.classifier
        wanted = [[label for label in pred.labels if label in c.directions] for pred in predictions]
        pairs = [(i, c.directions.index(label)) for i, labels in enumerate(wanted) for label in labels]
        out: list[dict[str, list[dict]]] = [{} for _ in texts]
        if not pairs:
            return out
        capped = c._capped(list(texts))  # both halves read at most this much of a unit
        encoder = self.encoder_contributions(capped, pairs)
        lexical_probs = c.lexical.probabilities(capped) if c.lexical is not None else None
        lexical_rows = {i: lexical_contributions(c.lexical, capped[i]) for i in {i for i, _ in pairs}} \
            if c.lexical is not None else {}
        for (i, d), enc in zip(pairs, encoder):
            direction = c.directions[d]
            weights = self.combine(enc, lexical_rows[i][:, d] if lexical_rows else None,
                                   predictions[i].scores[direction],
                                   float(lexical_probs[i, d]) if lexical_probs is not None else None)
            out[i][direction] = [span.to_dict() for span in spans_from_weights(capped[i], weights, self.settings)]
        return out

    @staticmethod
    def combine(encoder: np.ndarray, lexical: np.ndarray | None, fused_p: float, lexical_p: float | None) -> np.ndarray:
        """Per-character evidence: each half's positive part normalised, weighted by its share of fused_p."""
        if lexical is None or lexical_p is None:
            return _positive_share(encoder)
        encoder_p = min(max(2 * fused_p - lexical_p, 0.0), 1.0)  # fused = (encoder + TF-IDF) / 2
        total = encoder_p + lexical_p
        share = encoder_p / total if total > 0 else 0.5
        return share * _positive_share(encoder) + (1 - share) * _positive_share(lexical)

    def encoder_contributions(self, texts: Sequence[str], pairs: Sequence[tuple[int, int]]) -> list[np.ndarray]:
        """For each (text index, direction index), each character's part of the encoder's logit (LIG)."""
        import torch
        from captum.attr import LayerIntegratedGradients

        self._check_weights()
        c = self.classifier
        model = c.model
        prefix = c.text_prefix
        enc = c.tokenizer([prefix + text for text in texts], truncation=True, max_length=c.max_length,
                          return_offsets_mapping=True, return_special_tokens_mask=True)
        pad = c.tokenizer.pad_token_id
        rows = []
        for i, d in pairs:
            ids = enc["input_ids"][i]
            offsets = enc["offset_mapping"][i]
            special = enc["special_tokens_mask"][i]
            # Tokens of the unit itself: not special, and ending after the prefix.
            own = [not s and b > len(prefix) and b > a for (a, b), s in zip(offsets, special)]
            baseline = [pad if mine else tok for tok, mine in zip(ids, own)]
            rows.append((i, d, ids, baseline, offsets, own))

        def forward(input_ids, attention_mask):
            return model(input_ids=input_ids, attention_mask=attention_mask).logits.float()

        lig = LayerIntegratedGradients(forward, model.get_input_embeddings())
        device = c.device
        order = sorted(range(len(rows)), key=lambda r: len(rows[r][2]))  # similar lengths, little padding
        per_row: dict[int, np.ndarray] = {}
        deltas: dict[int, float] = {}
        step = self.settings.rows_per_call
        for start in range(0, len(order), step):
            group = [rows[r] for r in order[start:start + step]]
            width = max(len(row[2]) for row in group)
            ids = torch.full((len(group), width), pad, dtype=torch.long)
            base = torch.full((len(group), width), pad, dtype=torch.long)
            mask = torch.zeros((len(group), width), dtype=torch.long)
            for k, row in enumerate(group):
                ids[k, :len(row[2])] = torch.tensor(row[2])
                base[k, :len(row[3])] = torch.tensor(row[3])
                mask[k, :len(row[2])] = 1
            ids, base, mask = ids.to(device), base.to(device), mask.to(device)
            # fp32 on the torch weights whatever the served precision: gradients under bf16 autocast or int8
            # quantization are too coarse to rank tokens.
            with torch.autocast(device.type, enabled=False):
                attributions, delta = lig.attribute(
                    inputs=ids, baselines=base, additional_forward_args=(mask,),
                    target=[row[1] for row in group], n_steps=self.settings.n_steps,
                    internal_batch_size=min(len(group) * self.settings.n_steps, self.settings.max_sequences),
                    return_convergence_delta=True)
            tokens = attributions.sum(dim=-1).detach().cpu().numpy()
            for k, row in enumerate(group):
                deltas[order[start + k]] = float(delta[k].detach().abs())
                per_row[order[start + k]] = self._to_characters(texts[row[0]], tokens[k], row[4], row[5], len(prefix))
        self.last_deltas = [deltas[r] for r in range(len(rows))]
        return [per_row[r] for r in range(len(rows))]

    @staticmethod
    def _to_characters(text: str, tokens: np.ndarray, offsets: Sequence[tuple[int, int]], own: Sequence[bool],
                       skip: int) -> np.ndarray:
        """A token's attribution shared out over the non-space characters of its span (prefix removed)."""
        out = np.zeros(len(text), dtype=np.float64)
        for value, (a, b), mine in zip(tokens, offsets, own):
            if not mine:
                continue
            a, b = max(a - skip, 0), min(b - skip, len(text))
            covered = [k for k in range(a, b) if not text[k].isspace()] or list(range(a, b))
            if covered:
                out[covered] += float(value) / len(covered)
        return out
