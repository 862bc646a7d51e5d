"""MPNet (all-mpnet-base-v2, multi-qa-mpnet-*): BERT's post-norm encoder without token types,
plus a bucketed relative-position bias computed once and added in every layer.

MPNet counts positions from padding_idx + 1 inside the model (as RoBERTa does in its
tokenization); the encoder adds whatever part of that offset the engine has not.
"""

from __future__ import annotations

from ..config import ModelSpec
from ..errors import ModelLoadError
from ..weights import WeightReader
from . import fields
from .architecture import Architecture, param_loader
from .heads import ClassificationHead
from .layers import Transformer, TransformerConfig

MODEL_TYPES = ("mpnet",)


def transformer_config(spec: ModelSpec, dtype, attention: str) -> TransformerConfig:
    c = spec.config
    first_position = int(c.get("pad_token_id", 1)) + 1
    return TransformerConfig(
        hidden_size=int(c["hidden_size"]), num_layers=int(c["num_hidden_layers"]),
        num_heads=int(c["num_attention_heads"]), intermediate_size=int(c["intermediate_size"]),
        vocab_size=int(c["vocab_size"]), type_vocab_size=0, max_positions=int(c["max_position_embeddings"]),
        norm_eps=float(c.get("layer_norm_eps", 1e-12)),
        hidden_act=fields.activation_name("hidden_act", c.get("hidden_act", "gelu")),
        relative_buckets=int(c.get("relative_attention_num_buckets", 32)),
        position_offset=first_position - spec.position_offset,
        attention=attention, dtype=dtype,
    )


def load_encoder(reader: WeightReader, cfg: TransformerConfig) -> dict:
    params = {
        "embeddings": {
            "word": reader.embedding("embeddings.word_embeddings"),
            "position": reader.embedding("embeddings.position_embeddings"),
            "norm": reader.norm("embeddings.LayerNorm"),
        },
        "relative_attention_bias": reader.embedding("encoder.relative_attention_bias"),
    }
    for i in range(cfg.num_layers):
        p = f"encoder.layer.{i}."
        params[f"layer_{i}"] = {
            "attention": {
                "qkv": reader.fused_linear([p + "attention.attn.q", p + "attention.attn.k", p + "attention.attn.v"]),
                "out": reader.linear(p + "attention.attn.o"),
            },
            "attn_norm": reader.norm(p + "attention.LayerNorm"),
            "mlp": {"up": reader.linear(p + "intermediate.dense"), "down": reader.linear(p + "output.dense")},
            "mlp_norm": reader.norm(p + "output.LayerNorm"),
        }
    return params


def _classifier(spec: ModelSpec, cfg: TransformerConfig):
    """MPNetForSequenceClassification: CLS -> dense, tanh -> out_proj (RoBERTa's head)."""
    steps = (("dense", "dense", cfg.hidden_size, True), ("act", "tanh"), ("dense", "out_proj", None, True))

    def load(reader: WeightReader) -> dict:
        return {
            "dense": reader.linear("classifier.dense", prefixed=False),
            "out_proj": reader.linear("classifier.out_proj", prefixed=False),
        }

    return ClassificationHead(steps, len(spec.id2label), cfg.dtype), load


def build(spec: ModelSpec, dtype, attention: str) -> Architecture:
    """MPNet embeddings or MPNetForSequenceClassification."""
    if spec.pooling == "splade":
        raise ModelLoadError("config.json: field 'architectures': MPNet has no masked-LM head for SPLADE here")
    cfg = transformer_config(spec, dtype, attention)
    head = load_head = None
    if spec.kind in ("classifier", "reranker"):
        head, load_head = _classifier(spec, cfg)

    load_params = param_loader(load_encoder, cfg, load_head)

    return Architecture(
        encoder=Transformer(cfg), load_params=load_params, head=head,
        uses_token_types=False, checkpoint_prefixes=("mpnet.",),
    )
