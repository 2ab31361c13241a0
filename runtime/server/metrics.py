"""The server's Prometheus metrics, named as vLLM names them with an `llmc:` prefix (same suffixes,
labels and histogram buckets), so a vLLM Grafana dashboard works by changing the prefix.
One registry per app, never the global one.
"""

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

PREFIX = "llmc:"
LABELS = ["model_name"]
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
                40.0, 80.0)
REQUEST_LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
                           120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)
ITERATION_TOKEN_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
PHASES = ("queue", "prefill", "decode", "inference")  # request_<phase>_time_seconds


def token_buckets(max_model_len: int) -> list[int]:
    """1, 2, 5, 10, 20, 50, ... up to the context length."""
    buckets, scale = [], 1
    while True:
        for m in (1, 2, 5):
            if m * scale > max_model_len:
                return buckets
            buckets.append(m * scale)
        scale *= 10


class ServerMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, model_name: str = "llmc", max_model_len: int = 2048):
        self.registry = r = CollectorRegistry()
        self.model_name = model_name

        def metric(cls, name, doc, **kw):
            return cls(PREFIX + name, doc, LABELS + kw.pop("extra", []), registry=r, **kw)

        self.running = metric(Gauge, "num_requests_running", "Number of requests in model execution batches.")
        self.waiting = metric(Gauge, "num_requests_waiting", "Number of requests waiting to be processed.")
        self.kv_usage = metric(Gauge, "kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.")
        self.prefix_queries = metric(Counter, "prefix_cache_queries", "Prefix cache queries, in queried tokens.")
        self.prefix_hits = metric(Counter, "prefix_cache_hits", "Prefix cache hits, in cached tokens.")
        self.preemptions = metric(Counter, "num_preemptions", "Cumulative number of preemptions from the engine.")
        self.prompt_tokens = metric(Counter, "prompt_tokens", "Number of prefill tokens processed.")
        self.generation_tokens = metric(Counter, "generation_tokens", "Number of generation tokens processed.")
        self.success = metric(Counter, "request_success", "Count of successfully processed requests.",
                              extra=["finished_reason"])
        tokens = token_buckets(max_model_len)
        self.request_prompt_tokens = metric(Histogram, "request_prompt_tokens", "Number of prefill tokens processed.",
                                            buckets=tokens)
        self.request_generation_tokens = metric(Histogram, "request_generation_tokens",
                                                "Number of generation tokens processed.", buckets=tokens)
        self.iteration_tokens = metric(Histogram, "iteration_tokens_total", "Number of tokens per engine step.",
                                       buckets=ITERATION_TOKEN_BUCKETS)
        self.params_n = metric(Histogram, "request_params_n", "The n request parameter.", buckets=[1, 2, 5, 10, 20])
        self.params_max_tokens = metric(Histogram, "request_params_max_tokens", "The max_tokens request parameter.",
                                        buckets=tokens)
        self.ttft = metric(Histogram, "time_to_first_token_seconds", "Time to first token in seconds.",
                           buckets=TTFT_BUCKETS)
        self.tpot = metric(Histogram, "time_per_output_token_seconds", "Time per output token in seconds.",
                           buckets=TPOT_BUCKETS)
        self.itl = metric(Histogram, "inter_token_latency_seconds", "Inter-token latency in seconds.",
                          buckets=TPOT_BUCKETS)
        self.e2e = metric(Histogram, "e2e_request_latency_seconds", "End-to-end request latency in seconds.",
                          buckets=REQUEST_LATENCY_BUCKETS)
        self.phase = {p: metric(Histogram, f"request_{p}_time_seconds", f"Time spent in the {p.upper()} phase.",
                                buckets=REQUEST_LATENCY_BUCKETS) for p in PHASES}
        self._counted: dict[str, float] = {}

    def _l(self, metric, **labels):
        return metric.labels(model_name=self.model_name, **labels)

    def set_engine_stats(self, stats: dict) -> None:
        """The engine's gauges, and its cumulative counters (the increase since the last call is added)."""
        self._l(self.running).set(stats["num_running"])
        self._l(self.waiting).set(stats["num_waiting"])
        total = stats.get("kv_blocks_total") or 0
        self._l(self.kv_usage).set(stats.get("kv_cache_usage", stats.get("kv_blocks_used", 0) / total if total else 0.0))
        for key, counter in (("num_preemptions", self.preemptions), ("prefix_cache_queries", self.prefix_queries),
                             ("prefix_cache_hits", self.prefix_hits)):
            if key in stats:
                grown = stats[key] - self._counted.get(key, 0)
                if grown > 0:
                    self._l(counter).inc(grown)
                self._counted[key] = stats[key]

    def request(self, n: int, max_tokens: int) -> None:
        self._l(self.params_n).observe(n)
        self._l(self.params_max_tokens).observe(max_tokens)

    def step(self, num_tokens: int) -> None:
        self._l(self.iteration_tokens).observe(num_tokens)

    def first_token(self, seconds: float, num_prompt_tokens: int) -> None:
        self._l(self.ttft).observe(seconds)
        self._l(self.prompt_tokens).inc(num_prompt_tokens)
        self._l(self.request_prompt_tokens).observe(num_prompt_tokens)

    def tokens(self, count: int, seconds_since_last: float | None) -> None:
        """`count` new tokens arrived together, `seconds_since_last` after the previous ones."""
        self._l(self.generation_tokens).inc(count)
        if seconds_since_last is not None and count:
            for _ in range(count):
                self._l(self.itl).observe(seconds_since_last / count)

    def finished(self, finish_reason: str, seconds_since_arrival: float, num_output_tokens: int = 0,
                 phases: dict[str, float] | None = None) -> None:
        """A request ended; `phases`: seconds spent queued, prefilling, decoding (and inference = both)."""
        self._l(self.success, finished_reason=finish_reason).inc()
        self._l(self.e2e).observe(seconds_since_arrival)
        self._l(self.request_generation_tokens).observe(num_output_tokens)
        for name, seconds in (phases or {}).items():
            self._l(self.phase[name]).observe(seconds)
        if phases and num_output_tokens > 1 and "decode" in phases:
            self._l(self.tpot).observe(phases["decode"] / (num_output_tokens - 1))

    def render(self) -> bytes:
        return generate_latest(self.registry)
