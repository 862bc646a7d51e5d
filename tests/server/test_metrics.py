"""Metrics survive the model's arrival; the input-length buckets follow its max input length."""

from __future__ import annotations

from app.metrics import Metrics


def test_counts_from_before_the_model_loaded_are_kept():
    metrics = Metrics()
    metrics.request_failure.labels("unhealthy").inc()
    metrics.set_max_input_length(256)
    metrics.input_length.observe(300)
    text = metrics.exposition().decode()
    assert 'te_request_failure_total{err="unhealthy"} 1.0' in text
    assert 'te_request_input_length_bucket{le="256.0"} 0.0' in text
    assert 'te_request_input_length_bucket{le="512.0"}' not in text
    assert 'te_request_input_length_bucket{le="+Inf"} 1.0' in text
