"""The server's Prometheus metrics, in a registry of its own (one per app, never the global one)."""

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0)
ITL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
               1.0, 2.5, 5.0)
E2E_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0)


class ServerMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("llmc_requests", "Requests that finished, by finish reason.",
                                ["finish_reason"], registry=r)
        self.prompt_tokens = Counter("llmc_prompt_tokens", "Prompt tokens of admitted requests.", registry=r)
        self.generation_tokens = Counter("llmc_generation_tokens", "Tokens generated.", registry=r)
        self.time_to_first_token = Histogram("llmc_time_to_first_token_seconds",
                                             "From arrival to the first generated token.",
                                             buckets=TTFT_BUCKETS, registry=r)
        self.inter_token_latency = Histogram("llmc_inter_token_latency_seconds",
                                             "Between consecutive generated tokens of one request.",
                                             buckets=ITL_BUCKETS, registry=r)
        self.e2e_latency = Histogram("llmc_e2e_request_latency_seconds", "From arrival to the last token.",
                                     buckets=E2E_BUCKETS, registry=r)
        self.running = Gauge("llmc_num_requests_running", "Sequences in the running batch.", registry=r)
        self.waiting = Gauge("llmc_num_requests_waiting", "Sequences waiting to be scheduled.", registry=r)
        self.kv_blocks_used = Gauge("llmc_kv_blocks_used", "KV cache blocks in use.", registry=r)
        self.kv_blocks_total = Gauge("llmc_kv_blocks_total", "KV cache blocks in the pool.", registry=r)

    def set_engine_stats(self, stats: dict) -> None:
        self.running.set(stats["num_running"])
        self.waiting.set(stats["num_waiting"])
        self.kv_blocks_used.set(stats["kv_blocks_used"])
        self.kv_blocks_total.set(stats["kv_blocks_total"])

    def first_token(self, seconds: float, num_prompt_tokens: int) -> None:
        self.time_to_first_token.observe(seconds)
        self.prompt_tokens.inc(num_prompt_tokens)

    def tokens(self, count: int, seconds_since_last: float | None) -> None:
        """`count` new tokens arrived together, `seconds_since_last` after the previous ones."""
        self.generation_tokens.inc(count)
        if seconds_since_last is not None and count:
            for _ in range(count):
                self.inter_token_latency.observe(seconds_since_last / count)

    def finished(self, finish_reason: str, seconds_since_arrival: float) -> None:
        self.requests.labels(finish_reason=finish_reason).inc()
        self.e2e_latency.observe(seconds_since_arrival)

    def render(self) -> bytes:
        return generate_latest(self.registry)
