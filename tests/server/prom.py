"""Reading one sample out of a /metrics page: by metric name and a subset of its labels."""

from __future__ import annotations

import re

import httpx
from prometheus_client.parser import text_string_to_metric_families


def metric(url: str, name: str) -> float:
    """`name` may carry labels, `llmc:request_success_total{finished_reason="abort"}`; the sum of the samples
    that have them (every model_name), 0.0 when there is none."""
    bare, _, labels = name.partition("{")
    wanted = dict(re.findall(r'(\w+)="([^"]*)"', labels))
    total = 0.0
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            if sample.name == bare and all(sample.labels.get(k) == v for k, v in wanted.items()):
                total += sample.value
    return total
