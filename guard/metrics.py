"""Every Prometheus object the guard exports, in one place. Prefix ``guard_``; labels are
bounded (stage, decision, policy version, judge name, route, status class), never content."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

_MS_BUCKETS = (0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)


class GuardMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.decisions = Counter("guard_decisions", "Verdicts by stage and decision", ["stage", "decision", "policy"], registry=r)
        self.stage_latency = Histogram("guard_stage_latency_ms", "Latency of each pipeline stage (ms)", ["stage"],
                                       buckets=_MS_BUCKETS, registry=r)
        self.judge_tokens = Counter("guard_judge_tokens", "Tokens spent by judges", ["judge", "kind"], registry=r)
        self.judge_cost = Counter("guard_judge_cost_usd", "Judge cost in USD (known prices only)", ["judge"], registry=r)
        self.judge_cost_unknown = Counter("guard_judge_cost_unknown", "Judge calls whose price is unknown", ["judge"], registry=r)
        self.cache = Counter("guard_cache", "Verdict cache lookups", ["result"], registry=r)
        self.cache_hits = Counter("guard_cache_hits", "Verdict cache hits by tier (local, redis)", ["tier"], registry=r)
        self.cache_errors = Counter("guard_cache_errors", "Shared verdict cache failures (served without it)", ["op"],
                                    registry=r)
        self.judge_failures = Counter("guard_judge_failures", "Judge failures and timeouts (degraded verdicts)",
                                      ["judge", "reason", "fail_mode"], registry=r)
        self.policy_reloads = Counter("guard_policy_reloads", "Policy reloads by outcome (reloaded, unchanged, rejected)",
                                      ["result"], registry=r)
        self.escalations = Counter("guard_escalations", "Cascade escalations to the reasoning judge", registry=r)
        self.upstream_skipped = Counter("guard_upstream_skipped", "Upstream calls saved by an input refusal", registry=r)
        self.requests = Counter("guard_http_requests", "HTTP requests by route and status", ["route", "method", "status"], registry=r)
        self._children: dict[tuple, object] = {}
        self.request_latency = Histogram("guard_http_request_latency_ms", "HTTP request latency (ms)", ["route"],
                                         buckets=_MS_BUCKETS, registry=r)

    def child(self, metric, *labels: str):
        """``metric.labels(*labels)``, memoised: prometheus_client's lookup costs microseconds per call."""
        key = (id(metric), labels)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = metric.labels(*labels)
        return c
