"""The classifier for pretrained encoders: a BERT body, CLS-pooler or mean pooling, one linear head.

`BertForSequenceClassification` always classifies from the pooler (a dense + tanh
over [CLS]). Encoders trained for sentence embeddings, such as e5, have no
pooler and were trained to be mean-pooled; a randomly initialised pooler in front
of them makes the first epochs learn nothing. This class lets the config choose.

Importing this module registers the model type with the Auto classes, so an
artifact loads with `AutoModelForSequenceClassification.from_pretrained(path)` —
no `trust_remote_code`. `runtime.classifier` imports it for that reason.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, BertConfig, BertModel, BertPreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

MODEL_TYPE = "fic-bert"
POOLINGS = ("cls", "mean")


class PooledBertConfig(BertConfig):
    model_type = MODEL_TYPE

    def __init__(self, pooling: str = "cls", **kwargs) -> None:
        super().__init__(**kwargs)
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        self.pooling = pooling


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Average of the token vectors that are not padding."""
    if attention_mask is None:
        return hidden.mean(dim=1)
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class PooledBertForSequenceClassification(BertPreTrainedModel):
    config_class = PooledBertConfig
    base_model_prefix = "bert"

    def __init__(self, config: PooledBertConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = BertModel(config, add_pooling_layer=config.pooling == "cls")
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        # Mean-pooled e5 vectors are strongly anisotropic: any two texts have cosine ~0.87 and each
        # dimension varies ~0.09 around a mean of ~0.2. A linear head on such vectors learns almost
        # nothing in a few epochs (BCE stayed at the label prior, 0.33); standardising each dimension
        # over the batch first (BatchNorm) lets the same head reach 0.13 in 50 steps.
        self.pooled_norm = nn.BatchNorm1d(config.hidden_size) if config.pooling == "mean" else nn.Identity()
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def pooled(self, input_ids=None, attention_mask=None, token_type_ids=None, inputs_embeds=None) -> torch.Tensor:
        """The sentence vector the head sees (also what the frozen-feature baseline uses)."""
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                        inputs_embeds=inputs_embeds)
        if self.config.pooling == "mean":
            return mean_pool(out.last_hidden_state, attention_mask)
        return out.pooler_output

    def _standardise(self, pooled: torch.Tensor) -> torch.Tensor:
        norm = self.pooled_norm
        if isinstance(norm, nn.BatchNorm1d) and self.training and pooled.shape[0] == 1:
            # A batch of one has no spread to standardise by (a dataset's last batch can be that small).
            return nn.functional.batch_norm(pooled, norm.running_mean, norm.running_var, norm.weight, norm.bias,
                                            training=False, eps=norm.eps)
        return norm(pooled)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, inputs_embeds=None, labels=None,
                **kwargs) -> SequenceClassifierOutput:
        logits = self.classifier(self.dropout(self._standardise(
            self.pooled(input_ids, attention_mask, token_type_ids, inputs_embeds))))
        loss = None
        if labels is not None:
            # Multi-label only: one sigmoid per direction, `other` is the all-zero row.
            loss = nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        return SequenceClassifierOutput(loss=loss, logits=logits)


AutoConfig.register(MODEL_TYPE, PooledBertConfig, exist_ok=True)
AutoModelForSequenceClassification.register(PooledBertConfig, PooledBertForSequenceClassification, exist_ok=True)
