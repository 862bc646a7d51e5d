"""BERT, RoBERTa, XLM-RoBERTa and CamemBERT: one post-norm encoder, four weight layouts.

The RoBERTa family differs from BERT only in its checkpoint prefix, its classification head
and its masked-LM head names; position ids starting after the padding index are applied by
the tokenization step (ModelSpec.position_offset), so the module is the same.
"""

from __future__ import annotations

from ..config import ModelSpec
from ..errors import ModelLoadError
from ..weights import WeightReader
from .architecture import Architecture, param_loader
from .heads import ClassificationHead, MaskedLMHead
from .layers import ACTIVATIONS, Transformer, TransformerConfig

MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "camembert")
_ROBERTA_LIKE = ("roberta", "xlm-roberta", "camembert")


def transformer_config(spec: ModelSpec, dtype, attention: str) -> TransformerConfig:
    cfg = spec.config
    if cfg.get("position_embedding_type", "absolute") != "absolute":
        raise ModelLoadError(
            f"config.json: field 'position_embedding_type' = {cfg['position_embedding_type']!r} "
            "is not supported (only 'absolute')"
        )
    if cfg.get("hidden_act", "gelu") not in ACTIVATIONS:
        raise ModelLoadError(f"config.json: field 'hidden_act' = {cfg['hidden_act']!r} is not supported")
    return TransformerConfig(
        hidden_size=cfg["hidden_size"],
        num_layers=cfg["num_hidden_layers"],
        num_heads=cfg["num_attention_heads"],
        intermediate_size=cfg["intermediate_size"],
        vocab_size=cfg["vocab_size"],
        type_vocab_size=cfg.get("type_vocab_size", 2),
        max_positions=cfg["max_position_embeddings"],
        norm_eps=cfg.get("layer_norm_eps", 1e-12),
        hidden_act=cfg.get("hidden_act", "gelu"),
        attention=attention,
        dtype=dtype,
    )


def load_encoder(reader: WeightReader, cfg: TransformerConfig) -> dict:
    """BERT-layout encoder weights -> Transformer params (shared with other BERT-like files)."""
    params = {
        "embeddings": {
            "word": reader.embedding("embeddings.word_embeddings"),
            "position": reader.embedding("embeddings.position_embeddings"),
            "norm": reader.norm("embeddings.LayerNorm"),
        }
    }
    if cfg.type_vocab_size:
        params["embeddings"]["token_type"] = reader.embedding("embeddings.token_type_embeddings")
    for i in range(cfg.num_layers):
        p = f"encoder.layer.{i}."
        params[f"layer_{i}"] = {
            "attention": {
                "qkv": reader.fused_linear([p + "attention.self.query", p + "attention.self.key", p + "attention.self.value"]),
                "out": reader.linear(p + "attention.output.dense"),
            },
            "attn_norm": reader.norm(p + "attention.output.LayerNorm"),
            "mlp": {"up": reader.linear(p + "intermediate.dense"), "down": reader.linear(p + "output.dense")},
            "mlp_norm": reader.norm(p + "output.LayerNorm"),
        }
    return params


def _classifier(spec: ModelSpec, cfg: TransformerConfig, roberta_like: bool):
    hidden, labels = cfg.hidden_size, len(spec.id2label)
    if roberta_like:
        steps = (("dense", "dense", hidden, True), ("act", "tanh"), ("dense", "out_proj", None, True))

        def load(reader: WeightReader) -> dict:
            return {
                "dense": reader.linear("classifier.dense", prefixed=False),
                "out_proj": reader.linear("classifier.out_proj", prefixed=False),
            }
    else:
        steps = (("dense", "pooler", hidden, True), ("act", "tanh"), ("dense", "classifier", None, True))

        def load(reader: WeightReader) -> dict:
            return {
                "pooler": reader.linear("pooler.dense"),
                "classifier": reader.linear("classifier", prefixed=False),
            }

    return ClassificationHead(steps, labels, cfg.dtype), load


def _mlm_head(spec: ModelSpec, cfg: TransformerConfig, roberta_like: bool):
    base = "lm_head." if roberta_like else "cls.predictions."
    head = MaskedLMHead(
        hidden_size=cfg.hidden_size,
        vocab_size=cfg.vocab_size,
        hidden_act="gelu" if roberta_like else cfg.hidden_act,
        norm_eps=cfg.norm_eps,
        dtype=cfg.dtype,
    )

    def load(reader: WeightReader) -> dict:
        decoder = base + "decoder.weight"
        return {
            "transform": reader.linear(base + ("dense" if roberta_like else "transform.dense"), prefixed=False),
            "norm": reader.norm(base + ("layer_norm" if roberta_like else "transform.LayerNorm"), prefixed=False),
            "decoder": reader.get(decoder, prefixed=False) if reader.has(decoder, prefixed=False)
            else reader.get("embeddings.word_embeddings.weight"),
            "bias": reader.get(base + "bias", prefixed=False) if reader.has(base + "bias", prefixed=False)
            else reader.get(base + "decoder.bias", prefixed=False),
        }

    return head, load


def build(spec: ModelSpec, dtype, attention: str) -> Architecture:
    """The BERT-family Architecture for a spec (embedding, classifier, reranker or SPLADE)."""
    cfg = transformer_config(spec, dtype, attention)
    roberta_like = spec.model_type in _ROBERTA_LIKE
    head = load_head = None
    if spec.kind in ("classifier", "reranker"):
        head, load_head = _classifier(spec, cfg, roberta_like)
    elif spec.pooling == "splade":
        head, load_head = _mlm_head(spec, cfg, roberta_like)

    load_params = param_loader(load_encoder, cfg, load_head)

    return Architecture(
        encoder=Transformer(cfg),
        load_params=load_params,
        head=head,
        uses_token_types=bool(cfg.type_vocab_size),
        checkpoint_prefixes=("roberta.",) if roberta_like else ("bert.",),
    )
