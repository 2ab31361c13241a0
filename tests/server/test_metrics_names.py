"""/metrics speaks vLLM's names (llmc: for vllm:), labels and buckets, so its dashboards work unchanged."""

from prometheus_client.parser import text_string_to_metric_families

from llmc.runtime.server.metrics import ServerMetrics, token_buckets

VLLM_NAMES = {
    "num_requests_running", "num_requests_waiting", "kv_cache_usage_perc", "prefix_cache_queries", "prefix_cache_hits",
    "num_preemptions", "prompt_tokens", "generation_tokens", "request_success", "request_prompt_tokens",
    "request_generation_tokens", "iteration_tokens_total", "request_params_n", "request_params_max_tokens",
    "time_to_first_token_seconds", "time_per_output_token_seconds", "inter_token_latency_seconds",
    "e2e_request_latency_seconds", "request_queue_time_seconds", "request_prefill_time_seconds",
    "request_decode_time_seconds", "request_inference_time_seconds",
}


def families(metrics: ServerMetrics) -> dict:
    return {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}


def sample(metrics, name, **labels):
    return sum(s.value for f in families(metrics).values() for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_every_vllm_metric_is_there_with_the_model_name():
    m = ServerMetrics("qwen3", max_model_len=4096)
    m.set_engine_stats({"num_running": 1, "num_waiting": 0, "kv_blocks_used": 3, "kv_blocks_total": 12})
    m.first_token(0.2, 7)
    m.finished("stop", 1.0, 5, {"queue": 0.1, "prefill": 0.1, "decode": 0.8, "inference": 0.9})
    found = families(m)
    assert {f"llmc:{n}" for n in VLLM_NAMES} <= set(found), sorted(set(found))
    for family in found.values():
        assert all(s.labels.get("model_name") == "qwen3" for s in family.samples), family.name
    assert sample(m, "llmc:kv_cache_usage_perc") == 0.25
    assert sample(m, "llmc:request_success_total", finished_reason="stop") == 1
    assert sample(m, "llmc:request_decode_time_seconds_sum") == 0.8
    assert sample(m, "llmc:time_per_output_token_seconds_sum") == 0.2


def test_the_buckets_are_vllms():
    m = ServerMetrics("x", max_model_len=4096)
    m.first_token(0.01, 1)
    bounds = [s.labels["le"] for s in families(m)["llmc:time_to_first_token_seconds"].samples if s.name.endswith("_bucket")]
    assert bounds[:3] == ["0.001", "0.005", "0.01"] and bounds[-2:] == ["2560.0", "+Inf"]
    assert token_buckets(4096) == [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000]


def test_engine_counters_add_what_grew():
    m = ServerMetrics("x")
    for queries, hits, preempted in ((10, 4, 0), (25, 16, 2), (25, 16, 2)):
        m.set_engine_stats({"num_running": 0, "num_waiting": 0, "kv_cache_usage": 0.5, "num_preemptions": preempted,
                            "prefix_cache_queries": queries, "prefix_cache_hits": hits})
    assert sample(m, "llmc:prefix_cache_queries_total") == 25 and sample(m, "llmc:prefix_cache_hits_total") == 16
    assert sample(m, "llmc:num_preemptions_total") == 2 and sample(m, "llmc:kv_cache_usage_perc") == 0.5
