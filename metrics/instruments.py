"""The metrics the web process counts itself (prometheus-client), shared by all its gunicorn workers.

Under gunicorn, prometheus-client runs in multiprocess mode: each worker writes its samples to
files in PROMETHEUS_MULTIPROC_DIR (gunicorn.conf.py makes a fresh folder at each start and
removes a dead worker's live gauges), and GET /metrics adds them up. Outside gunicorn (tests,
runserver) they live in the process's default registry.
"""

from prometheus_client import Counter, Gauge, Histogram

# Seconds; the trial-predict paths wait up to MODELHUB_PREDICT_MAX_WAIT (30 s by default).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

REQUESTS = Counter(
    "modelhub_http_requests",
    "HTTP requests answered by the web process, by route (the URL pattern), method and status.",
    ["route", "method", "status"],
)
LATENCY = Histogram(
    "modelhub_http_request_duration_seconds",
    "Seconds from a request's arrival in Django to its answer, by route, method and status.",
    ["route", "method", "status"],
    buckets=LATENCY_BUCKETS,
)
# One series per live web process (label pid): the requests it answered since it started.
PROCESS_REQUESTS = Gauge(
    "modelhub_web_process_requests",
    "Requests answered by each live web process since it started (one series per process).",
    multiprocess_mode="liveall",
)
