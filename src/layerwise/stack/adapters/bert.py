"""Hugging Face BERT: the bare encoder and the sequence classifier."""

from __future__ import annotations

from torch import nn

from layerwise.stack.readout import Readout
from layerwise.stack.registry import hooked_embed, is_class, register_adapter
from layerwise.stack.state import StackParts


@register_adapter("BertModel", is_class("BertModel"))
def bert_encoder(model: nn.Module) -> StackParts:
    # A bare encoder: no head, so the readout returns pooled features. Sentence-embedding models
    # (MiniLM) pool by masked mean; the loader sets that from the model's pooling config.
    return StackParts(
        embed=hooked_embed(model, model.encoder.layer[0]),
        blocks=model.encoder.layer,
        readout=Readout(None, None, "cls"),
        task="encoder",
        feature_pooling="cls",
        hidden_size=model.config.hidden_size,
    )


@register_adapter("BertForSequenceClassification", is_class("BertForSequenceClassification"))
def bert_classifier(model: nn.Module) -> StackParts:
    bert = model.bert
    # BERT is post-LN (each block ends in a LayerNorm), so there is no final norm; the pooler is head.
    head = nn.Sequential(bert.pooler.dense, bert.pooler.activation, model.dropout, model.classifier)
    return StackParts(
        embed=hooked_embed(model, bert.encoder.layer[0]),
        blocks=bert.encoder.layer,
        readout=Readout(None, head, "cls"),
        task="classification",
        feature_pooling="cls",
        hidden_size=model.config.hidden_size,
        num_classes=getattr(model.config, "num_labels", None),
    )
