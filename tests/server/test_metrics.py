"""Metrics survive the model's arrival; the input-length buckets follow its max input length;
the exposition uses TEI's series names."""

from __future__ import annotations

import re

from app.metrics import Metrics


def test_counts_from_before_the_model_loaded_are_kept():
    metrics = Metrics()
    metrics.request_failure.labels("unhealthy").inc()
    metrics.set_max_input_length(256)
    metrics.input_length.observe(300)
    text = metrics.exposition().decode()
    assert 'te_request_failure{err="unhealthy"} 1\n' in text
    assert 'te_request_input_length_bucket{le="256.0"} 0.0' in text
    assert 'te_request_input_length_bucket{le="512.0"}' not in text
    assert 'te_request_input_length_bucket{le="+Inf"} 1.0' in text


def test_counters_have_teis_names_without_total_or_created():
    metrics = Metrics()
    metrics.request_count.labels("single").inc(3)
    metrics.embed_count.inc(2)
    metrics.request_duration.observe(0.01)
    text = metrics.exposition().decode()
    assert re.search(r'^te_request_count\{method="single"\} 3$', text, re.M)
    assert re.search(r"^te_embed_count 2$", text, re.M)
    assert re.search(r"^# TYPE te_request_count counter$", text, re.M)
    assert re.search(r"^te_request_duration_count 1\.0$", text, re.M)
    assert "_total" not in text and "_created" not in text
