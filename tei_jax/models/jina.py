"""JinaBERT v2 (jina-embeddings-v2-*, jina-reranker-v1-*): a `bert` config whose remote code is
jinaai/jina-bert-implementation. Post-norm BERT with symmetric ALiBi instead of positions and a
GLU MLP (gated_layers -> act(gate) * value -> wo, then its own LayerNorm).

The jinaai/jina-bert-v2-qk-post-norm variant (jina-embeddings-v2-base-code) adds LayerNorms on
the full q and k projections, normalises the attention block's output once more together with
the layer input (layer_norm_1), and names its MLP up_gated_layer (value first) / down_layer.
"""

from __future__ import annotations

import dataclasses

from ..config import ModelSpec
from ..errors import ModelLoadError
from . import table
from .architecture import Architecture
from .fields import FamilyConfig, WidthSplitHeads, derived, json_field
from .heads import pooler_classifier
from .layers import (Activation, AttentionSpec, LayerVariant, MLPKind, MLPSpec, NormSpec, PositionKind, QKNorm,
                     StackSpec, Transformer, uniform)
from .table import Axis, Tensor, WeightTable

PREFIXES = ("bert.",)  # the encoder inside classifier checkpoints
MODEL_TYPES = ("bert",)
UNUSED_OK = ("pooler.", "/pooler.", "/classifier.", "/cls.")
IMPLEMENTATION = "jinaai/jina-bert-implementation"
QK_POST_NORM = "jinaai/jina-bert-v2-qk-post-norm"
_GLU_ACTIVATIONS = {"geglu": Activation.GELU, "reglu": Activation.RELU}


def _remote_code(spec: ModelSpec) -> str | None:
    """Which JinaBERT code a config points at (_name_or_path or auto_map), if any."""
    auto_map = spec.config.get("auto_map")
    places = [str(spec.config.get("_name_or_path", ""))]
    if isinstance(auto_map, dict):
        places += [str(v) for v in auto_map.values()]
    for code in (QK_POST_NORM, IMPLEMENTATION):
        if any(code in place for place in places):
            return code
    return None


def matches(spec: ModelSpec) -> bool:
    return spec.model_type == "bert" and _remote_code(spec) is not None


@dataclasses.dataclass(frozen=True)
class JinaConfig(FamilyConfig, WidthSplitHeads):
    hidden_size: int = json_field("hidden_size")
    num_layers: int = json_field("num_hidden_layers")
    num_heads: int = json_field("num_attention_heads")
    intermediate_size: int = json_field("intermediate_size")
    vocab_size: int = json_field("vocab_size")
    type_vocab_size: int = json_field("type_vocab_size", default=2)
    max_positions: int = json_field("max_position_embeddings", default=0)
    norm_eps: float = json_field("layer_norm_eps", default=1e-12)
    position_embedding_type: str = json_field("position_embedding_type", default="absolute",
                                              allowed=("alibi", "absolute"))
    feed_forward_type: str = json_field("feed_forward_type", default="geglu", allowed=tuple(_GLU_ACTIVATIONS))
    qk_post_norm: bool = derived()

    @property
    def alibi(self) -> bool:
        return self.position_embedding_type == "alibi"

    def stack(self, dtype, attention: str) -> StackSpec:
        return StackSpec(
            hidden_size=self.hidden_size, vocab_size=self.vocab_size,
            attention=AttentionSpec(self.num_heads, self.head_dim, implementation=attention,
                                    qk_norm=QKNorm.FULL_WIDTH if self.qk_post_norm else QKNorm.NONE),
            mlp=MLPSpec(self.intermediate_size, _GLU_ACTIVATIONS[self.feed_forward_type], MLPKind.GATED,
                        bias=False, out_bias=True),
            variants=uniform(self.num_layers), norm=NormSpec(eps=self.norm_eps),
            positions=PositionKind.ALIBI if self.alibi else PositionKind.ABSOLUTE,
            max_positions=self.max_positions, type_vocab_size=self.type_vocab_size,
            attn_renorm=self.qk_post_norm, dtype=dtype,
        )


def _full_width_norm(path: str, name: str, heads: int, head_dim: int) -> list[Tensor]:
    """A LayerNorm over q's (or k's) full width [heads * head_dim], kept as [heads, head_dim]."""
    return [Tensor(f"{path}/{ours}", (Axis.HEADS, Axis.HEAD_DIM), (f"{name}.{theirs}",), table.reshaped(heads, head_dim))
            for ours, theirs in (("scale", "weight"), ("bias", "bias"))]


def layer_entries(cfg: JinaConfig):
    h, d, width = cfg.num_heads, cfg.head_dim, cfg.intermediate_size

    def entries(variant: LayerVariant) -> list[Tensor]:
        p = "encoder.layer.{i}."
        out = (table.qkv("attention", [p + "attention.self." + n for n in ("query", "key", "value")], h, h, d, True)
               + table.attention_out("attention/out", p + "attention.output.dense", h, d, True)
               + table.norm("attn_norm", p + "attention.output.LayerNorm"))
        if cfg.qk_post_norm:
            out += (_full_width_norm("attention/q_layernorm", p + "attention.self.layer_norm_q", h, d)
                    + _full_width_norm("attention/k_layernorm", p + "attention.self.layer_norm_k", h, d)
                    + table.norm("attn_renorm", p + "layer_norm_1")
                    # up_gated_layer rows: [value | gate]
                    + table.gate_up("mlp", p + "mlp.up_gated_layer", width, bias=False, gate_first=False)
                    + table.linear("mlp/down", p + "mlp.down_layer", (Axis.MLP, Axis.EMBED))
                    + table.norm("mlp_norm", p + "layer_norm_2"))
        else:  # gated_layers rows: [gate | value]
            out += (table.gate_up("mlp", p + "mlp.gated_layers", width, bias=False)
                    + table.linear("mlp/down", p + "mlp.wo", (Axis.MLP, Axis.EMBED))
                    + table.norm("mlp_norm", p + "mlp.layernorm"))
        return out

    return entries


def build(spec: ModelSpec, dtype, attention: str) -> Architecture:
    """JinaBERT embeddings, or the jina-reranker-v1 classifier."""
    if spec.pooling == "splade":
        raise ModelLoadError("config.json: field 'architectures': JinaBERT has no masked-LM head for SPLADE here")
    cfg = JinaConfig.parse(spec.config, qk_post_norm=_remote_code(spec) == QK_POST_NORM)
    stack = cfg.stack(dtype, attention)
    head, head_entries = None, []
    if spec.kind in ("classifier", "reranker"):
        if cfg.qk_post_norm:
            raise ModelLoadError(
                f"config.json: field 'auto_map' points at {QK_POST_NORM}, which is served as an embedding model only"
            )
        head, head_entries = pooler_classifier(spec, cfg.hidden_size, dtype, PREFIXES)
    encoder = (table.embedding("encoder/embeddings/word", "embeddings.word_embeddings", Axis.VOCAB)
               + table.embedding("encoder/embeddings/token_type", "embeddings.token_type_embeddings", Axis.TYPES)
               + table.norm("encoder/embeddings/norm", "embeddings.LayerNorm"))
    if not cfg.alibi:
        encoder += table.embedding("encoder/embeddings/position", "embeddings.position_embeddings", Axis.POSITIONS)
    weights = WeightTable(encoder + head_entries, layer_entries(cfg), stack.variants, unused_ok=UNUSED_OK)
    return Architecture(
        encoder=Transformer(stack), table=weights, config=cfg, head=head,
        uses_token_types=True, checkpoint_prefixes=PREFIXES,
    )
