"""`python -m tei_jax.bench --mode corpus` on a tiny preset: the rows, ratios and agreement."""

from __future__ import annotations

from tei_jax.bench import corpus_mode


def test_corpus_mode_reports_each_system(tmp_path):
    options = corpus_mode.CorpusOptions(preset="tiny", documents=60, warmup_documents=20, ray=False,
                                        shard_size=25, batch_docs=16, work_dir=tmp_path)
    result = corpus_mode.run(options)
    local, peer = result["systems"][corpus_mode.LOCAL], result["systems"][corpus_mode.PEER]
    assert local["documents"] == peer["documents"] == 60 and local["tokens"] == result["workload"]["tokens"]
    assert local["ratio_to_peer"] == local["tokens_per_s"] / peer["tokens_per_s"]
    assert peer["agreement_with_ours"]["min_cosine"] > 0.9999
    assert 0 < local["padding_efficiency"] <= 1 and local["output_bytes"] > 0
    text = corpus_mode.table(result)
    assert "sentence-transformers" in text and "docs/s" in text
    assert not list(tmp_path.glob("tei-jax-corpus-bench-*"))  # its corpus and outputs are removed
