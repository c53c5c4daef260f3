"""Prometheus text-format metrics (exposition format 0.0.4), written here because
prometheus_client is not a dependency: counters, gauges and histograms with labels, and an ASGI
middleware that counts every request by route template (not raw path, so a scan of random URLs
cannot blow up the number of series)."""

from __future__ import annotations

import bisect
import math
import threading
import time
from typing import Callable, Iterable

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _labels(names: tuple[str, ...], values: tuple) -> str:
    if not names:
        return ""
    esc = (str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for v in values)
    return "{" + ",".join(f'{n}="{v}"' for n, v in zip(names, esc)) + "}"


def _num(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v)) if not float(v).is_integer() else str(int(v))


class _Metric:
    kind = ""

    def __init__(self, name: str, help: str, labels: Iterable[str] = ()):
        self.name, self.help, self.label_names = name, help, tuple(labels)
        self._lock = threading.Lock()

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name, help, labels=()):
        super().__init__(name, help, labels)
        self.values: dict[tuple, float] = {}

    def inc(self, *labels, by: float = 1.0) -> None:
        with self._lock:
            self.values[labels] = self.values.get(labels, 0.0) + by

    def get(self, *labels) -> float:
        return self.values.get(labels, 0.0)

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(self.values.items())
        return self.header() + [f"{self.name}{_labels(self.label_names, k)} {_num(v)}" for k, v in items]


class Gauge(_Metric):
    """A value read when /metrics is scraped."""

    kind = "gauge"

    def __init__(self, name, help, read: Callable[[], float]):
        super().__init__(name, help)
        self.read = read

    def render(self) -> list[str]:
        return self.header() + [f"{self.name} {_num(self.read())}"]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name, help, labels=(), buckets=LATENCY_BUCKETS):
        super().__init__(name, help, labels)
        self.buckets = tuple(sorted(buckets))
        self.series: dict[tuple, list] = {}   # labels -> [counts per bucket..., count, sum]

    def observe(self, value: float, *labels) -> None:
        with self._lock:
            s = self.series.setdefault(labels, [0] * len(self.buckets) + [0, 0.0])
            i = bisect.bisect_left(self.buckets, value)  # le is inclusive
            if i < len(self.buckets):
                s[i] += 1
            s[-2] += 1
            s[-1] += value

    def render(self) -> list[str]:
        out = self.header()
        with self._lock:
            items = sorted((k, list(v)) for k, v in self.series.items())
        for labels, s in items:
            running = 0
            for le, n in zip(self.buckets + (math.inf,), s[:len(self.buckets)] + [s[-2] - sum(s[:len(self.buckets)])]):
                running += n
                out.append(f"{self.name}_bucket{_labels(self.label_names + ('le',), labels + (_num(le),))} {running}")
            out.append(f"{self.name}_count{_labels(self.label_names, labels)} {s[-2]}")
            out.append(f"{self.name}_sum{_labels(self.label_names, labels)} {_num(s[-1])}")
        return out


class Metrics:
    """The service's metrics; `render()` is the /metrics body."""

    def __init__(self, queue_depth: Callable[[], float] = lambda: 0, index_size: Callable[[], float] = lambda: 0):
        self.requests = Counter("keyreid_http_requests_total", "HTTP requests by route, method and status.",
                                ("route", "method", "status"))
        self.latency = Histogram("keyreid_http_request_duration_seconds",
                                 "Time from request to the end of the response, by route.", ("route",))
        self.rejections = Counter("keyreid_rejections_total",
                                  "Requests refused, by reason (too_large, unsupported_type, bad_image, "
                                  "pixel_limit, overloaded, invalid_option, unauthorized, not_found).", ("reason",))
        self.batch_size = Histogram("keyreid_inference_batch_size", "Images per model call (micro-batching).",
                                    buckets=(1, 2, 4, 8, 16, 32, 64))
        self.inference = Histogram("keyreid_inference_batch_seconds", "Model + index time per batch.")
        self.gauges = [Gauge("keyreid_queue_depth", "Queries waiting for the inference pool.", queue_depth),
                       Gauge("keyreid_index_size", "Images in the gallery index.", index_size)]

    def render(self) -> str:
        lines: list[str] = []
        for m in (self.requests, self.latency, self.rejections, self.batch_size, self.inference, *self.gauges):
            lines += m.render()
        return "\n".join(lines) + "\n"


class MetricsMiddleware:
    """Counts every HTTP request by the route template it matched ("other" when none did)."""

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def send_status(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or ("static" if scope.get("path", "").startswith("/static/")
                                                    else "other")
            self.metrics.requests.inc(path, scope.get("method", ""), str(status["code"]))
            self.metrics.latency.observe(time.perf_counter() - start, path)


__all__ = ["Counter", "Gauge", "Histogram", "Metrics", "MetricsMiddleware"]
