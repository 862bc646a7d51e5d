"""Tiny random DeBERTa-v2/v3 models saved by transformers with the hub's weight names, in the
configurations the public checkpoints use (cached under tiny_models.ROOT like the others)."""

from __future__ import annotations

from pathlib import Path

import tiny_models as tm

# deberta-v3-base/large and mxbai-rerank-*-v1: shared keys, log buckets, LayerNorm'ed relative
# embeddings, no absolute positions. 16 buckets (v3: 256) so 30-token inputs reach the log range.
V3 = dict(relative_attention=True, position_buckets=16, max_relative_positions=-1, norm_rel_ebd="layer_norm",
          share_att_key=True, pos_att_type="p2c|c2p", position_biased_input=False, type_vocab_size=0)
# deberta-v2-xlarge: as v3 plus the convolution after the first layer.
V2_XLARGE = dict(V3, conv_kernel_size=3, conv_act="gelu")
# The original DeBERTa-v2 layout: separate pos_key_proj / pos_query_proj, no buckets (a
# distance clamp at 24), absolute positions and token types as well.
V2_CLASSIC = dict(relative_attention=True, position_buckets=-1, max_relative_positions=24, share_att_key=False,
                  pos_att_type=["c2p", "p2c"], position_biased_input=True, type_vocab_size=2)
VARIANTS = {"v3": V3, "v2-xlarge": V2_XLARGE, "v2-classic": V2_CLASSIC}
_HEADS = {"base": "DebertaV2Model", "classification": "DebertaV2ForSequenceClassification",
          "masked_lm": "DebertaV2ForMaskedLM"}


def make_deberta(variant: str = "v3", head: str = "base", num_labels: int = 2, pooling: str | None = "mean",
                 tag: str = "", **overrides) -> Path:
    """Save a tiny random DeBERTa-v2 `variant` with head base | classification | masked_lm."""
    key = f"deberta-{variant}-{head}-{num_labels}-{tag}-" + "-".join(f"{k}={v}" for k, v in sorted(overrides.items()))
    folder = tm.ROOT / key
    def build(into: Path) -> None:
        import torch
        import transformers

        torch.manual_seed(13)
        # initializer_range 0.2 (not 0.02): logits of order one, so positions visibly steer attention
        kwargs = dict(tm.TINY, layer_norm_eps=1e-7, hidden_act="gelu", pad_token_id=0, initializer_range=0.2,
                      **VARIANTS[variant])
        kwargs.update(overrides)
        config = transformers.DebertaV2Config(**kwargs)
        if head == "classification":
            config.num_labels = num_labels
            config.id2label = {i: f"LABEL_{i}" for i in range(num_labels)}
            config.label2id = {v: k for k, v in config.id2label.items()}
        model = getattr(transformers, _HEADS[head])(config).eval()
        tm.save_with_random_vectors(model, into)
        if head == "base" and pooling:
            tm.write_pooling(into, pooling)

    return tm.build_once(folder, build)
