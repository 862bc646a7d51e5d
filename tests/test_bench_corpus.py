"""`python -m tei_jax.bench --mode corpus` on a tiny preset, without the peers (sentence-transformers
and Ray have their own tests; loading torch here would double this test's time)."""

from __future__ import annotations

from tei_jax.bench import corpus_mode


def test_corpus_mode_reports_each_system(tmp_path):
    options = corpus_mode.CorpusOptions(preset="tiny", documents=60, warmup_documents=20, peer=False, ray=False,
                                        shard_size=25, batch_docs=16, work_dir=tmp_path)
    result = corpus_mode.run(options)
    assert list(result["systems"]) == [corpus_mode.LOCAL]
    local = result["systems"][corpus_mode.LOCAL]
    assert local["documents"] == 60 and local["tokens"] == result["workload"]["tokens"]
    assert local["tokens_per_s"] > 0 and local["documents_per_s"] > 0
    assert 0 < local["padding_efficiency"] <= 1 and local["output_bytes"] > 0
    assert "tei-jax corpus job" in corpus_mode.table(result)
    assert not list(tmp_path.glob("tei-jax-corpus-bench-*"))  # its corpus and outputs are removed
