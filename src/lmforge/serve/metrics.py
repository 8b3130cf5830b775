"""What the server counts, in Prometheus' text format (`GET /metrics`, prometheus_client).

Each server has a registry of its own, so two servers in one process (tests) do not share
counters. The scheduler's thread and the event loop both record; prometheus_client's
metrics are thread-safe.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

# seconds: from a millisecond (a tiny model's step) to a minute (a long prompt in a queue)
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "lmforge_requests", "HTTP requests answered", ["endpoint", "status"], registry=r
        )
        self.prompt_tokens = Counter(
            "lmforge_prompt_tokens", "prompt tokens read (generation and embeddings)", registry=r
        )
        self.generated_tokens = Counter("lmforge_generated_tokens", "tokens generated", registry=r)
        self.finished = Counter(
            "lmforge_sequences_finished",
            "sequences ended, by finish reason (stop, length, cancelled, error)",
            ["reason"],
            registry=r,
        )
        self.in_flight = Gauge(
            "lmforge_requests_in_flight", "generation and embedding requests in progress",
            registry=r,
        )  # fmt: skip
        self.queue_depth = Gauge(
            "lmforge_queue_depth", "sequences waiting for a KV slot or their prefill", registry=r
        )
        self.batch_size = Gauge(
            "lmforge_batch_size", "sequences in the latest decode step", registry=r
        )
        self.step_batch = Histogram(
            "lmforge_decode_batch_size", "sequences per decode step", buckets=BATCH_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.ttft = Histogram(
            "lmforge_time_to_first_token_seconds",
            "from a sequence's submission to its first token",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            "lmforge_inter_token_latency_seconds",
            "between consecutive tokens of a sequence",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.duration = Histogram(
            "lmforge_request_duration_seconds", "whole requests", buckets=LATENCY_BUCKETS,
            registry=r,
        )  # fmt: skip

    def on_step(self, running: int, waiting: int) -> None:
        """The scheduler's hook, after each step."""
        self.batch_size.set(running)
        self.queue_depth.set(waiting)
        if running:
            self.step_batch.observe(running)

    def render(self) -> bytes:
        return generate_latest(self.registry)
