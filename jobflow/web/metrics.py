"""``/metrics``: live counts in Prometheus text format, behind the API token unless METRICS_PUBLIC."""
from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from jobflow.embeddings import provider_model
from jobflow.jobs import queue
from jobflow.models import WorkerStatus
from jobflow.timeutil import ms, utcnow

bp = Blueprint("metrics", __name__)


# Figures of the newest per-minute sample: (sample field, metric, help).
LAST_MINUTE = (("completed", "jobflow_completed_last_minute", "Items completed in the last sampled minute"),
               ("p50Ms", "jobflow_queue_latency_p50_ms", "Queued to done, median, last sampled minute"),
               ("p95Ms", "jobflow_queue_latency_p95_ms", "Queued to done, 95th percentile"))


class PipelineCollector:
    """Reads the figures from the database at each scrape (indexed counts only)."""

    def __init__(self, settings: dict):
        self.settings = settings

    def collect(self):
        from jobflow.ops import samples
        from jobflow.ops.counts import job_counts_live, queue_counts
        # The dashboard's own counting: live where cheap, from the worker's minute sample where large.
        jobs = job_counts_live(provider_model(self.settings))
        total, current = jobs["jobsTotal"], jobs["jobsCurrent"]
        yield GaugeMetricFamily("jobflow_jobs", "Jobs in the database", value=total)
        yield GaugeMetricFamily("jobflow_jobs_embedded", "Jobs with a current embedding", value=current)
        yield GaugeMetricFamily("jobflow_jobs_embedding_failed", "Jobs whose embedding failed", value=jobs["jobsFailed"])
        active, active_current = jobs["jobsActive"], jobs["jobsActiveCurrent"]
        yield GaugeMetricFamily("jobflow_jobs_active", "Active jobs (the ones that are embedded)", value=active)
        yield GaugeMetricFamily("jobflow_embedding_coverage_ratio",
                                "Active jobs with a current embedding / active jobs",
                                value=(active_current / active) if active else 1.0)
        items = GaugeMetricFamily("jobflow_queue_items", "Queue items waiting, in flight or failed", labels=["status"])
        for status, count in queue_counts(samples.latest_sample()).values.items():
            items.add_metric([status], count)
        yield items
        alive_after = utcnow() - ms(self.settings["WORKER_DEAD_THRESHOLD"])
        workers = GaugeMetricFamily("jobflow_workers", "Workers with a recent heartbeat, by state", labels=["state"])
        processed = CounterMetricFamily("jobflow_worker_processed", "Items processed by each live worker",
                                        labels=["worker"])
        failed = CounterMetricFamily("jobflow_worker_failed", "Failed attempts of each live worker", labels=["worker"])
        tokens = CounterMetricFamily("jobflow_worker_tokens", "Tokens used by each live worker", labels=["worker"])
        states: dict[str, int] = {}
        for status in WorkerStatus.objects(lastHeartbeat__gte=alive_after).only(
                "workerId", "state", "processed", "failed", "tokensUsed"):
            states[status.state] = states.get(status.state, 0) + 1
            processed.add_metric([status.workerId], status.processed or 0)
            failed.add_metric([status.workerId], status.failed or 0)
            tokens.add_metric([status.workerId], status.tokensUsed or 0)
        for state in ("running", "paused", "stopping", "stopped", "degraded"):
            workers.add_metric([state], states.get(state, 0))
        yield workers
        yield processed
        yield failed
        yield tokens
        hour_ago = utcnow() - timedelta(hours=1)
        yield GaugeMetricFamily("jobflow_queue_failed_last_hour", "Items failed for good in the last hour",
                                value=queue._coll().count_documents({"status": "failed", "finishedAt": {"$gte": hour_ago}}))
        yield from capture_metrics(self.settings)
        sample = samples.latest_sample()
        if sample:
            for key, name, help_text in LAST_MINUTE:
                if isinstance(sample.get(key), (int, float)):
                    yield GaugeMetricFamily(name, help_text, value=sample[key])


def capture_metrics(settings: dict):
    """Change capture: its state, its lag over the last minute, and the job documents it cannot use."""
    from jobflow.ops.capture_status import capture_status
    capture = capture_status(settings, utcnow(), misfits=True)
    state = GaugeMetricFamily("jobflow_capture_state", "Change capture state (1 for the current one)", labels=["state"])
    for name in ("ok", "starting", "behind", "down", "off"):
        state.add_metric([name], 1 if capture["state"] == name else 0)
    yield state
    lag = GaugeMetricFamily("jobflow_capture_lag_ms", "Write to queue, over the last minute", labels=["quantile"])
    for quantile, key in (("0.5", "p50"), ("0.99", "p99"), ("1", "max")):
        if capture["lag"][key] is not None:
            lag.add_metric([quantile], capture["lag"][key])
    yield lag
    yield GaugeMetricFamily("jobflow_capture_changes_last_minute", "Changes handled by change capture in the last "
                            "minute", value=capture["lag"]["count"])
    yield GaugeMetricFamily("jobflow_job_misfits", "Job documents that cannot be used (not embedded)",
                            value=capture["misfitCount"])


@bp.get("/metrics")
def metrics():
    """Prometheus text format."""
    from jobflow.web.access import bearer_ok
    if not current_app.config.get("METRICS_PUBLIC") and not bearer_ok():
        return Response("Send Authorization: Bearer <ADMIN_API_TOKEN> (or set METRICS_PUBLIC=true).\n", status=401,
                        mimetype="text/plain", headers={"WWW-Authenticate": "Bearer"})
    registry = CollectorRegistry()
    registry.register(PipelineCollector(current_app.config))
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
