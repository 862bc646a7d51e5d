"""DistilBERT: BERT's post-norm encoder without token types, under its own weight names."""

from __future__ import annotations

from ..config import ModelSpec
from ..errors import ModelLoadError
from ..weights import WeightReader
from .architecture import Architecture
from .heads import ClassificationHead, MaskedLMHead
from .layers import ACTIVATIONS, Transformer, TransformerConfig

MODEL_TYPES = ("distilbert",)


def build(spec: ModelSpec, dtype, attention: str) -> Architecture:
    c = spec.config
    act = c.get("activation", "gelu")
    if act not in ACTIVATIONS:
        raise ModelLoadError(f"config.json: field 'activation' = {act!r} is not supported")
    if c.get("sinusoidal_pos_embds"):
        raise ModelLoadError("config.json: field 'sinusoidal_pos_embds' = true is not supported")
    cfg = TransformerConfig(
        hidden_size=c["dim"], num_layers=c["n_layers"], num_heads=c["n_heads"],
        intermediate_size=c["hidden_dim"], vocab_size=c["vocab_size"], type_vocab_size=0,
        max_positions=c["max_position_embeddings"], norm_eps=1e-12, hidden_act=act,
        attention=attention, dtype=dtype,
    )
    head = load_head = None
    if spec.kind in ("classifier", "reranker"):
        head = ClassificationHead(
            (("dense", "pre_classifier", cfg.hidden_size, True), ("act", "relu"), ("dense", "classifier", None, True)),
            len(spec.id2label), dtype,
        )

        def load_head(reader: WeightReader) -> dict:
            return {
                "pre_classifier": reader.linear("pre_classifier", prefixed=False),
                "classifier": reader.linear("classifier", prefixed=False),
            }
    elif spec.pooling == "splade":
        head = MaskedLMHead(cfg.hidden_size, cfg.vocab_size, act, 1e-12, dtype=dtype)

        def load_head(reader: WeightReader) -> dict:
            projector = "vocab_projector.weight"
            return {
                "transform": reader.linear("vocab_transform", prefixed=False),
                "norm": reader.norm("vocab_layer_norm", prefixed=False),
                "decoder": reader.get(projector, prefixed=False) if reader.has(projector, prefixed=False)
                else reader.get("embeddings.word_embeddings.weight"),
                "bias": reader.get("vocab_projector.bias", prefixed=False),
            }

    def load_params(reader: WeightReader) -> dict:
        encoder = {
            "embeddings": {
                "word": reader.embedding("embeddings.word_embeddings"),
                "position": reader.embedding("embeddings.position_embeddings"),
                "norm": reader.norm("embeddings.LayerNorm"),
            }
        }
        for i in range(cfg.num_layers):
            p = f"transformer.layer.{i}."
            encoder[f"layer_{i}"] = {
                "attention": {
                    "qkv": reader.fused_linear([p + "attention.q_lin", p + "attention.k_lin", p + "attention.v_lin"]),
                    "out": reader.linear(p + "attention.out_lin"),
                },
                "attn_norm": reader.norm(p + "sa_layer_norm"),
                "mlp": {"up": reader.linear(p + "ffn.lin1"), "down": reader.linear(p + "ffn.lin2")},
                "mlp_norm": reader.norm(p + "output_layer_norm"),
            }
        params = {"encoder": encoder}
        if load_head is not None:
            params["head"] = load_head(reader)
        return params

    return Architecture(
        encoder=Transformer(cfg), load_params=load_params, head=head,
        uses_token_types=False, checkpoint_prefixes=("distilbert.",),
    )
