"""Prometheus metrics of a training step: pushed to a Pushgateway, or served on a port.

Every training step of the pipeline (pretrain, finetune, pseudolabel, distill, evaluate)
reports its progress through one :class:`TrainingMetrics`:

- **Push** (Kubeflow runs): when ``PUSHGATEWAY_URL`` is set (or ``pushgateway_url`` is given),
  the metrics are pushed every ``push_interval_s`` seconds and at the end, as job
  ``simclrv2`` in the group ``run=<run id>, step=<step name>``. Each push replaces the whole
  group (HTTP PUT, ``push_to_gateway``): the group always holds exactly this run's metrics.
- **Serve** (a long-lived process, a laptop): otherwise, with ``serve_port`` set,
  ``http://HOST:PORT/metrics`` serves them for Prometheus to scrape.
- **Off**: neither. Ranks other than 0 pass ``enabled=False``: every method is a no-op, so a
  distributed run reports once.

Metrics never stop or slow a training run: a failed push (gateway down, wrong URL, timeout)
logs a warning (at most one per ``warning_interval_s``), is counted in ``push_failure_count``
and training goes on. A push due in ``update`` runs in a background thread, bounded by
``push_timeout_s`` (5 s); ``update`` waits for it at most ``push_wait_s`` (0.5 s), so against
a healthy gateway (milliseconds) the values are out when it returns. A push that outlasts that
wait marks the gateway slow: until a push is quick again, ``update`` does not wait at all,
and a push that falls due while the last one is still in flight is skipped (counted in
``push_skipped_count``), never queued. So a gateway that hangs costs the training loop one
wait of ``push_wait_s`` per slow spell, and a gateway that is down (connection refused) the
milliseconds of a refused connection per ``push_interval_s``. Closing waits for the push in
flight, then pushes the final values and deletes the group, each bounded by
``push_timeout_s`` (docs/storage-faults.md has the measurements).

How to see them:

- the Pushgateway's web UI (``http://GATEWAY:9091/``) lists the groups; its ``/metrics``
  returns every pushed sample with the labels ``job``, ``run`` and ``step``;
- Prometheus scrapes the gateway with ``honor_labels: true`` so that these labels are kept
  (otherwise ``job`` becomes the scrape job's name and the pushed one ``exported_job``)::

      scrape_configs:
        - job_name: pushgateway
          honor_labels: true
          static_configs: [{targets: ["pushgateway.monitoring:9091"]}]

Metric names (Prometheus conventions: namespace ``simclrv2_``, base units in the name,
``_ratio`` for fractions between 0 and 1, ``_total`` only on the counter):

=========================================  =======  ==========================================
name                                       type     what
=========================================  =======  ==========================================
``simclrv2_train_loss``                    gauge    loss of the last optimizer step
``simclrv2_contrastive_accuracy_ratio``    gauge    top-1 accuracy of the contrastive task, 0-1
``simclrv2_train_accuracy_ratio``          gauge    top-1 accuracy on the training labels, 0-1
``simclrv2_learning_rate``                 gauge    learning rate of the last step
``simclrv2_images_per_second``             gauge    training throughput, images per second
``simclrv2_train_step``                    gauge    optimizer steps finished so far
``simclrv2_train_planned_steps``           gauge    optimizer steps the run will take in all
``simclrv2_epoch``                         gauge    current epoch
``simclrv2_eta_seconds``                   gauge    estimated time until the step is done
``simclrv2_last_update_timestamp_seconds`` gauge    Unix time of the last update
``simclrv2_stage_warnings``                gauge    warnings about the step's result (0: none)
``simclrv2_train_images_total``            counter  images processed by this process
=========================================  =======  ==========================================

Gauges that a step never sets (a fine-tune has no contrastive accuracy) read NaN, not 0.
prometheus_client also exposes ``simclrv2_train_images_created`` (when the counter started).
The Pushgateway adds ``push_time_seconds`` and ``push_failure_time_seconds`` per group. The
step label is the pipeline step (``pretrain``); ``simclrv2_train_step`` is the optimizer step.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from types import TracebackType
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    delete_from_gateway,
    push_to_gateway,
    start_http_server,
)

logger = logging.getLogger(__name__)

#: Environment variable naming the Pushgateway (``http://host:9091``); empty means no push.
PUSHGATEWAY_URL_ENV = "PUSHGATEWAY_URL"


class TrainingMetrics:
    """The Prometheus metrics of one training step of one run, pushed or served.

    ``pushgateway_url``: None reads ``PUSHGATEWAY_URL``; "" (or an unset variable) disables
    pushing. ``serve_port``: serve ``/metrics`` on that port when not pushing; 0 or None does
    not serve. ``enabled=False`` (ranks other than 0) makes every method a no-op.
    """

    def __init__(
        self,
        step_name: str,
        run_id: str,
        pushgateway_url: str | None = None,
        serve_port: int | None = None,
        push_interval_s: float = 15.0,
        enabled: bool = True,
        job: str = "simclrv2",
        *,
        serve_address: str = "0.0.0.0",
        push_timeout_s: float = 5.0,
        push_wait_s: float = 0.5,
        warning_interval_s: float = 60.0,
    ) -> None:
        if not step_name or not run_id:
            raise ValueError(
                f"step_name and run_id must be non-empty, got {step_name!r}, {run_id!r}"
            )
        self.step_name = step_name
        self.run_id = run_id
        self.job = job
        self.enabled = enabled
        self.push_interval_s = push_interval_s
        self.push_timeout_s = push_timeout_s
        self.push_wait_s = push_wait_s
        self.warning_interval_s = warning_interval_s
        if pushgateway_url is None:
            pushgateway_url = os.environ.get(PUSHGATEWAY_URL_ENV, "")
        self.pushgateway_url = pushgateway_url.strip()
        self.grouping_key = {"run": run_id, "step": step_name}

        self.push_count = 0
        self.push_failure_count = 0
        self.push_skipped_count = 0  # due while the gateway was still busy with the last push
        self._last_push_attempt = -math.inf  # the first update pushes at once
        self._in_flight: threading.Thread | None = None
        self._gateway_slow = False
        self._lock = threading.Lock()  # counters and warnings, shared with the push thread
        self._last_warning = -math.inf
        self._warnings_suppressed = 0
        self._closed = False
        self._server: WSGIServer | None = None

        # Our own registry: several instances may live in one process (tests, steps in a row).
        self.registry = CollectorRegistry()
        self._define_metrics()

        if not enabled:
            return
        if self.pushgateway_url:
            logger.info(
                "metrics: pushing to %s every %.0f s as job %s, run %s, step %s",
                self.pushgateway_url,
                push_interval_s,
                job,
                run_id,
                step_name,
            )
        elif serve_port:
            self._start_server(serve_address, serve_port)

    def _define_metrics(self) -> None:
        registry = self.registry
        self.loss = Gauge(
            "simclrv2_train_loss", "Training loss of the last optimizer step.", registry=registry
        )
        self.contrastive_accuracy = Gauge(
            "simclrv2_contrastive_accuracy_ratio",
            "Top-1 accuracy of the contrastive task (positive pair ranked first), 0 to 1.",
            registry=registry,
        )
        self.accuracy = Gauge(
            "simclrv2_train_accuracy_ratio",
            "Top-1 accuracy on the training labels of the last step, 0 to 1.",
            registry=registry,
        )
        self.learning_rate = Gauge(
            "simclrv2_learning_rate", "Learning rate of the last optimizer step.", registry=registry
        )
        self.knn_top1 = Gauge(
            "simclrv2_knn_top1_ratio",
            "Weighted-kNN top-1 of the encoder on the test split (pretrain.knn), 0 to 1.",
            registry=registry,
        )
        self.images_per_second = Gauge(
            "simclrv2_images_per_second",
            "Training throughput in images per second, as measured by the trainer.",
            registry=registry,
        )
        self.step = Gauge(
            "simclrv2_train_step", "Optimizer steps finished so far.", registry=registry
        )
        self.planned_steps = Gauge(
            "simclrv2_train_planned_steps",
            "Optimizer steps this training step will take in all.",
            registry=registry,
        )
        self.epoch = Gauge("simclrv2_epoch", "Current training epoch.", registry=registry)
        self.eta = Gauge(
            "simclrv2_eta_seconds",
            "Estimated seconds until this training step finishes.",
            registry=registry,
        )
        self.last_update = Gauge(
            "simclrv2_last_update_timestamp_seconds",
            "Unix time of the last metrics update.",
            registry=registry,
        )
        self.stage_warnings = Gauge(
            "simclrv2_stage_warnings",
            "Warnings the step raised about its result (simclrv2/training/stage_health.py).",
            registry=registry,
        )
        self.images = Counter(
            "simclrv2_train_images_total",
            "Images processed by this training step so far.",
            registry=registry,
        )
        # NaN until first given: a step that never reports a value (finetune has no
        # contrastive accuracy) shows a gap, not a misleading 0.
        for gauge in (
            self.loss,
            self.contrastive_accuracy,
            self.accuracy,
            self.knn_top1,
            self.learning_rate,
            self.images_per_second,
            self.planned_steps,
            self.eta,
        ):
            gauge.set(math.nan)

    @property
    def mode(self) -> str:
        """How metrics leave this process: push, serve or off (off too when disabled or closed)."""
        if not self.enabled or self._closed:
            return "off"
        if self.pushgateway_url:
            return "push"
        return "serve" if self._server is not None else "off"

    @property
    def server_port(self) -> int | None:
        """The port ``/metrics`` is served on, or None when not serving."""
        return None if self._server is None else self._server.server_address[1]

    def _start_server(self, address: str, port: int) -> None:
        try:
            self._server, _thread = start_http_server(port, addr=address, registry=self.registry)
        except OSError as error:
            # A taken port must not stop the training run; the metrics are just not served.
            logger.warning("metrics: cannot serve on %s:%d (%s); not serving", address, port, error)
            return
        logger.info("metrics: serving http://%s:%d/metrics", address, port)

    def update(
        self,
        step: int,
        epoch: int,
        *,
        images: int,
        loss: float | None = None,
        learning_rate: float | None = None,
        contrastive_accuracy: float | None = None,
        accuracy: float | None = None,
        knn_top1: float | None = None,
        images_per_second: float | None = None,
        eta_seconds: float | None = None,
        total_steps: int | None = None,
    ) -> None:
        """Record a finished optimizer ``step`` that processed ``images`` images.

        Sets the gauges that are given (the others keep their last value), adds ``images`` to
        the counter and pushes if ``push_interval_s`` has passed since the last push.
        """
        if not self.enabled or self._closed:
            return
        self.step.set(step)
        self.epoch.set(epoch)
        self.images.inc(images)
        optional = (
            (self.loss, loss),
            (self.learning_rate, learning_rate),
            (self.contrastive_accuracy, contrastive_accuracy),
            (self.accuracy, accuracy),
            (self.knn_top1, knn_top1),
            (self.images_per_second, images_per_second),
            (self.eta, eta_seconds),
            (self.planned_steps, total_steps),
        )
        for gauge, value in optional:
            if value is not None:
                gauge.set(float(value))
        self.last_update.set_to_current_time()
        if self.pushgateway_url and self._push_is_due():
            self._push_in_background()

    def set_warnings(self, count: int) -> None:
        """How many warnings the step raised about its result (0: none)."""
        if self.enabled and not self._closed:
            self.stage_warnings.set(count)

    def _push_is_due(self) -> bool:
        return time.monotonic() - self._last_push_attempt >= self.push_interval_s

    def _push_in_background(self) -> None:
        """Start a push in a thread; wait for it at most push_wait_s, or not at all while
        the gateway is slow. Skipped while the previous push is still in flight."""
        # Counted from the attempt, so an unreachable gateway is not retried at every step.
        self._last_push_attempt = time.monotonic()
        if self._in_flight is not None and self._in_flight.is_alive():
            with self._lock:
                self.push_skipped_count += 1
            return
        self._in_flight = threading.Thread(
            target=self._timed_push, name=f"metrics-push-{self.step_name}", daemon=True
        )
        self._in_flight.start()
        if self._gateway_slow:
            return
        self._in_flight.join(self.push_wait_s)
        if self._in_flight.is_alive():
            self._gateway_slow = True
            self._warn(
                f"metrics: {self.pushgateway_url} did not answer a push within "
                f"{self.push_wait_s:g} s; pushing in the background without waiting "
                "until it answers quickly again"
            )

    def _timed_push(self) -> None:
        started = time.monotonic()
        if self._push_now() and time.monotonic() - started < self.push_wait_s:
            self._gateway_slow = False

    def _wait_for_in_flight(self) -> None:
        """Let the push in flight finish (bounded: it times out after push_timeout_s)."""
        if self._in_flight is not None:
            self._in_flight.join(self.push_timeout_s + 1.0)

    def push(self) -> bool:
        """Push all metrics to the gateway now, replacing the group; True if it worked.

        Waits for a push still in flight first, so pushes arrive in order. Does nothing
        (False) when not pushing. Never raises: a failure is counted and logged.
        """
        if not self.enabled or self._closed or not self.pushgateway_url:
            return False
        self._wait_for_in_flight()
        self._last_push_attempt = time.monotonic()
        return self._push_now()

    def _push_now(self) -> bool:
        """One push, bounded by push_timeout_s; counted either way."""
        try:
            push_to_gateway(
                self.pushgateway_url,
                job=self.job,
                registry=self.registry,
                grouping_key=self.grouping_key,
                timeout=self.push_timeout_s,
            )
        except Exception as error:
            # Any failure (network, HTTP status, bad URL) must leave the training run alive.
            with self._lock:
                self.push_failure_count += 1
            self._warn(f"metrics: push to {self.pushgateway_url} failed: {error!r}")
            return False
        with self._lock:
            self.push_count += 1
        return True

    def _warn(self, message: str) -> None:
        """Log a warning, at most one per ``warning_interval_s``; count the ones held back."""
        with self._lock:
            now = time.monotonic()
            if now - self._last_warning < self.warning_interval_s:
                self._warnings_suppressed += 1
                logger.debug("%s", message)
                return
            if self._warnings_suppressed:
                message += f" ({self._warnings_suppressed} similar warnings suppressed)"
            logger.warning("%s", message)
            self._last_warning = now
            self._warnings_suppressed = 0

    def close(self, final: bool = True, delete_on_close: bool = False) -> None:
        """Stop reporting: push once more (``final``), delete the group from the gateway
        (``delete_on_close``) and stop the server. Safe to call twice; never raises."""
        if not self.enabled or self._closed:
            return
        if self.pushgateway_url:
            if final:
                self.push()
            if delete_on_close:
                self._wait_for_in_flight()  # else a late push could bring the group back
                self._delete_group()
        self._closed = True
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _delete_group(self) -> None:
        try:
            delete_from_gateway(
                self.pushgateway_url,
                job=self.job,
                grouping_key=self.grouping_key,
                timeout=self.push_timeout_s,
            )
        except Exception as error:
            with self._lock:
                self.push_failure_count += 1
            self._warn(f"metrics: deleting the group from {self.pushgateway_url} failed: {error!r}")

    def __enter__(self) -> TrainingMetrics:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # A final push also on errors: the last values show where the run stopped.
        self.close()
