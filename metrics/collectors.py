"""Metrics read at scrape time from where the truth is: the database rows of tracked work and the broker.

Workers may run on other machines, so what they did is read from the rows they leave
(core.models.TrackedWork), not counted in their processes:

- ``modelhub_tracked_work{kind, status}``: rows of each kind of tracked work by status;
- ``modelhub_tracked_work_duration_seconds{kind, status}``: a histogram of finished rows'
  ``finished_at - started_at``;
- ``modelhub_worker_heartbeat_age_seconds``: seconds since any worker last beat on a row it
  worked on (claim, heartbeat every 10 s while working, finish); absent until one ever did;
- ``modelhub_predictions_total{assembly, task, status}``: trial predictions (every path: REST,
  OIP, TF Serving, dashboard) by assembly id, task slug and status; a protocol request whose rows
  have several tasks is one prediction, counted as task="mixed";
- ``modelhub_queue_depth{queue}``: messages waiting in each Celery queue, on Redis or the
  filesystem broker alike (kombu's own count); ``modelhub_broker_up`` 0 when it cannot be read.

Every web process reads the same values: aggregate them with max(), not sum(), across replicas.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, DurationField, ExpressionWrapper, F, Max, Q, Sum
from django.utils import timezone
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from assemblies.selectors import assembly_task_slugs, prediction_counts
from core.tracked_work import tracked_models
from metrics.instruments import LATENCY_BUCKETS

logger = logging.getLogger(__name__)
DURATION_BUCKETS = (*LATENCY_BUCKETS, 300.0, 900.0, 3600.0, 4 * 3600.0)
# Stands for "several tasks" (a protocol's mixed batch) where a task id is counted.
MIXED_TASK_ID = -1


def queue_names() -> list[str]:
    """Return the Celery queues ModelHub routes work to."""
    names = [
        settings.MODELHUB_DEFAULT_QUEUE,
        settings.MODELHUB_TRAINING_QUEUE,
        settings.MODELHUB_ASSEMBLY_QUEUE,
        settings.MODELHUB_WEBHOOK_QUEUE,
    ]
    return list(dict.fromkeys(names))


def queue_depths() -> dict[str, int]:
    """Return the number of messages waiting in each queue (kombu counts them on any transport)."""
    from modelhub.celery import app

    depths = {}
    with app.connection_for_read() as connection:
        connection.ensure_connection(max_retries=1, timeout=settings.CELERY_BROKER_CONNECTION_TIMEOUT)
        channel = connection.default_channel
        for name in queue_names():
            # Passive: a scrape reads a queue, it never creates one (AMQP would declare it).
            try:
                depths[name] = int(channel.queue_declare(queue=name, passive=True).message_count)
            except connection.channel_errors:
                # No such queue: nothing waits there (Redis drops an empty list, AMQP has not
                # declared it yet). AMQP closes the channel on NOT_FOUND: take a fresh one.
                depths[name] = 0
                if getattr(channel, "is_open", True) is False:
                    channel = connection.channel()
    return depths


class ModelHubCollector:
    """A prometheus-client collector of the database- and broker-derived metrics above."""

    def collect(self):
        yield from self._tracked_work()
        yield from self._predictions()
        yield from self._queues()

    def _tracked_work(self):
        rows = GaugeMetricFamily(
            "modelhub_tracked_work", "Rows of tracked work by kind and status.", labels=["kind", "status"]
        )
        durations = HistogramMetricFamily(
            "modelhub_tracked_work_duration_seconds",
            "Seconds from a worker's claim to the finish of tracked work, by kind and final status.",
            labels=["kind", "status"],
        )
        last_beat = None
        duration = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
        for model in tracked_models():
            kind = model._meta.model_name
            manager = model._default_manager
            for status, count in manager.order_by().values_list("status").annotate(n=Count("pk")):
                rows.add_metric([kind, status], count)
            finished = manager.order_by().filter(started_at__isnull=False, finished_at__isnull=False)
            finished = finished.annotate(duration=duration)
            aggregates = {
                f"le{i}": Count("pk", filter=Q(duration__lte=timedelta(seconds=b)))
                for i, b in enumerate(DURATION_BUCKETS)
            }
            for row in finished.values("status").annotate(n=Count("pk"), total=Sum("duration"), **aggregates):
                buckets = [(_bound(b), row[f"le{i}"]) for i, b in enumerate(DURATION_BUCKETS)] + [("+Inf", row["n"])]
                total = row["total"].total_seconds() if row["total"] is not None else 0.0
                durations.add_metric([kind, row["status"]], buckets, total)
            beats = manager.aggregate(beat=Max("heartbeat_at"), finish=Max("finished_at", filter=~Q(worker="")))
            for moment in beats.values():
                if moment is not None and (last_beat is None or moment > last_beat):
                    last_beat = moment
        yield rows
        yield durations
        if last_beat is not None:
            age = GaugeMetricFamily(
                "modelhub_worker_heartbeat_age_seconds",
                "Seconds since a worker last showed a sign of life on a row it worked on (claim, heartbeat, finish).",
            )
            age.add_metric([], max(0.0, (timezone.now() - last_beat).total_seconds()))
            yield age

    def _predictions(self):
        family = CounterMetricFamily(
            "modelhub_predictions",
            "Trial predictions by assembly id, task slug and status.",
            labels=["assembly", "task", "status"],
        )
        # A protocol's mixed batch is one prediction with a task per row (inputs["task_id"]): task="mixed".
        counts = prediction_counts(mixed_task_id=MIXED_TASK_ID)
        assembly_ids = {assembly_id for assembly_id, _, _, _ in counts}
        slugs = assembly_task_slugs(assembly_ids=assembly_ids)
        slugs.update({(assembly_id, MIXED_TASK_ID): "mixed" for assembly_id in assembly_ids})
        for assembly_id, task_id, status, count in counts:
            family.add_metric([str(assembly_id), slugs.get((assembly_id, task_id), str(task_id)), status], count)
        yield family

    def _queues(self):
        up = GaugeMetricFamily("modelhub_broker_up", "1 when the broker's queue depths could be read, else 0.")
        depth = GaugeMetricFamily("modelhub_queue_depth", "Messages waiting in each Celery queue.", labels=["queue"])
        try:
            depths = queue_depths()
        except Exception as exc:  # a scrape must answer even when the broker is down
            logger.warning("metrics: cannot read the queue depths: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        for name, count in depths.items():
            depth.add_metric([name], count)
        yield up
        yield depth


def _bound(bucket: float) -> str:
    return repr(float(bucket))
