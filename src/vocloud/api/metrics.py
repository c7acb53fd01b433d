"""Prometheus metrics at ``/metrics`` (text exposition format, prometheus-client).

Two kinds of metric:

* **Gauges of the site, computed at scrape time** by :class:`StoreCollector` from a few
  set-based queries (``service/stats.py``): hosts by state, capacity and allocation per host,
  VMs by state and VO, the VO pools' pending jobs and workers, failed driver steps. Nothing is
  kept in memory between scrapes, so a restarted daemon reports the truth at once.
* **Process histograms and counters** in one :class:`Metrics` object per app (a registry of its
  own, so two apps in one test process never share numbers): API requests by route template and
  status (:class:`RequestMetrics`, an ASGI middleware), loop pass durations and failures (the
  daemon's loops observe them), boot latency (fed at scrape time from the VMs that started since
  the last scrape).

Names follow the Prometheus conventions: ``vocloud_`` prefix, base units (``_seconds``,
``_bytes``, ``_cores``), ``_total`` for counters. See docs/operations.md for the list.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Receive, Scope, Send

from vocloud.errors import Forbidden, VocloudError
from vocloud.service import stats
from vocloud.service.auth import Credentials
from vocloud.service.cloud import Cloud
from vocloud.store.db import Database
from vocloud.store.group_commit import for_store

#: Pool status fields exported per VO (the controller's last picture, ``vocloud pool list``).
POOL_FIELDS: dict[str, str] = {
    "pending_jobs": "Jobs of the VO waiting in the batch system",
    "desired": "Workers the pool should have once the current plan is carried out",
    "booting": "Workers requested or booting, not yet in the batch system",
    "running": "Workers joined to the batch system (idle + busy)",
    "draining": "Workers being drained",
    "idle": "Joined workers running no job",
}

BOOT_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, float("inf"))
LOOP_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, float("inf"))


class StoreCollector(Collector):
    """The site's gauges, computed from the store at each scrape."""

    def __init__(self, db: Database, boot: Histogram) -> None:
        self.db = db
        self.boot = boot
        self._boot_since = 0.0
        self._boot_seen: set[int] = set()
        self._lock = threading.Lock()

    def feed_boot_latency(self) -> None:
        with self._lock:
            rows = stats.boot_latencies(self.db, self._boot_since)
            for vm_id, _started, seconds in rows:
                if vm_id in self._boot_seen:
                    continue
                self.boot.observe(seconds)
                self._boot_seen.add(vm_id)
            if rows:
                latest = max(started for _, started, _ in rows)
                if latest > self._boot_since:
                    self._boot_since = latest
                    self._boot_seen = {vm_id for vm_id, started, _ in rows if started >= latest}

    def collect(self) -> Iterator[Metric]:
        st = stats.site_stats(self.db)
        hosts = GaugeMetricFamily("vocloud_hosts", "Hypervisor hosts by state", labels=["state"])
        for state, n in sorted(st.hosts_by_state.items()):
            hosts.add_metric([state], n)
        yield hosts
        def host_gauge(name: str, text: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, text, labels=["host"])

        cap = {
            "cpu_total": host_gauge("vocloud_host_cpu_total_cores", "Cores a host offers"),
            "cpu_alloc": host_gauge("vocloud_host_cpu_allocated_cores", "Cores allocated to VMs"),
            "cpu_used": host_gauge("vocloud_host_cpu_used_cores", "Cores in use (monitoring)"),
            "mem_total": host_gauge("vocloud_host_memory_total_bytes", "Memory a host offers"),
            "mem_alloc": host_gauge("vocloud_host_memory_allocated_bytes", "Memory allocated to VMs"),
            "mem_used": host_gauge("vocloud_host_memory_used_bytes", "Memory in use (monitoring)"),
        }
        fails = host_gauge("vocloud_host_monitor_failures", "Failed monitoring probes in a row")
        mib = 1024 * 1024
        for name, (tc, ac, uc, tm, am, um) in sorted(st.host_capacity.items()):
            cap["cpu_total"].add_metric([name], tc / 1000)
            cap["cpu_alloc"].add_metric([name], ac / 1000)
            cap["cpu_used"].add_metric([name], uc / 1000)
            cap["mem_total"].add_metric([name], tm * mib)
            cap["mem_alloc"].add_metric([name], am * mib)
            cap["mem_used"].add_metric([name], um * mib)
            fails.add_metric([name], st.host_monitor_failures.get(name, 0))
        yield from cap.values()
        yield fails
        vms = GaugeMetricFamily("vocloud_vms", "VMs by lifecycle state and VO (DONE excluded)",
                                labels=["state", "vo"])
        for (state, vo), n in sorted(st.vms.items()):
            vms.add_metric([state, vo], n)
        yield vms
        for key, text in POOL_FIELDS.items():
            name = "vocloud_pool_pending_jobs" if key == "pending_jobs" else f"vocloud_pool_{key}_workers"
            g = GaugeMetricFamily(name, text, labels=["vo"])
            for vo, status in sorted(st.pools.items()):
                value = status.get(key)
                if isinstance(value, int | float):
                    g.add_metric([vo], value)
            yield g
        pvm = GaugeMetricFamily("vocloud_pool_vms", "Pool worker VMs by pool state and VO",
                                labels=["vo", "state"])
        for (vo, state), n in sorted(st.pool_vms.items()):
            pvm.add_metric([vo, state], n)
        yield pvm
        vf = CounterMetricFamily("vocloud_vm_driver_failures",
                                 "Failed driver steps of VMs (*_fail events)", labels=["action"])
        for action, n in sorted(st.vm_failures.items()):
            vf.add_metric([action], n)
        yield vf


class WriterLockCollector(Collector):
    """The SQLite store's writer lock in this process (``Database.writer_stats``): a hold rate
    near 1 s per second means requests queue for the store's one writer (docs/operations.md);
    and the group commit's batches and calls (``store/group_commit.py``)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[Metric]:
        group = for_store(self.db)
        counts: tuple[tuple[str, str, float], ...] = (
            ("vocloud_store_group_commit_batches", "Transactions the group commit of this "
             "process committed (store/group_commit.py)", group.batches),
            ("vocloud_store_group_commit_calls", "Calls those transactions carried", group.calls),
            ("vocloud_store_group_commit_retried", "Calls run again alone after their batch, "
             "having given up a row-lock wait in it (PostgreSQL)", group.retried))
        for name, text, value in counts:
            c = CounterMetricFamily(name, text)
            c.add_metric([], value)
            yield c
        st = self.db.writer_stats()
        if st is None:  # PostgreSQL: row locks, no process-wide writer
            return
        n, waited, held = st
        for name, text, value in (
            ("vocloud_store_write_transactions", "Write transactions begun on the SQLite store "
             "by this process", n),
            ("vocloud_store_writer_wait_seconds", "Seconds this process's writers waited for "
             "the store's writer lock", waited),
            ("vocloud_store_writer_hold_seconds", "Seconds this process held the store's writer "
             "lock", held)):
            c = CounterMetricFamily(name, text)
            c.add_metric([], value)
            yield c


class Metrics:
    """One app's metrics: a registry of its own with the store collector and the process metrics."""

    def __init__(self, db: Database) -> None:
        self.registry = r = CollectorRegistry(auto_describe=False)
        self.requests = Counter("vocloud_api_requests", "API requests by method, route template and status",
                                ["method", "route", "status"], registry=r)
        self.request_seconds = Histogram("vocloud_api_request_duration_seconds",
                                         "API request duration by route template", ["method", "route"],
                                         registry=r, buckets=LOOP_BUCKETS)
        self.loop_seconds = Histogram("vocloud_loop_duration_seconds",
                                      "Duration of one pass of a daemon loop (scheduler, lifecycle, monitor, "
                                      "pools)", ["loop"], registry=r, buckets=LOOP_BUCKETS)
        self.loop_failures = Counter("vocloud_loop_failures",
                                     "Loop passes that failed (a batch-system or store error in the pools "
                                     "loop, a bug elsewhere)", ["loop"], registry=r)
        self.boot_seconds = Histogram("vocloud_vm_boot_duration_seconds",
                                      "Seconds from a VM's creation to its first RUNNING", registry=r,
                                      buckets=BOOT_BUCKETS)
        self.store = StoreCollector(db, self.boot_seconds)
        self.registry.register(self.store)
        self.registry.register(WriterLockCollector(db))

    def observe_loop(self, loop: str, seconds: float, failed: bool) -> None:
        """The daemon's loops call this after each pass."""
        self.loop_seconds.labels(loop).observe(seconds)
        if failed:
            self.loop_failures.labels(loop).inc()

    def exposition(self) -> bytes:
        self.store.feed_boot_latency()  # before the histogram is read, so this scrape has them
        return generate_latest(self.registry)


def _route_template(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"  # never the raw path: unbounded labels


def _bearer(scope: Scope) -> Credentials | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return Credentials(scheme.strip(), token.strip())
    return None


class RequestMetrics:
    """ASGI middleware: serves ``/metrics`` and counts every other request by route template
    (``/api/v1/vms/{vm_id}``, never the raw path) and status.

    ``/metrics`` names VOs and hosts, so unless ``public`` (setting ``metrics_public``) it asks
    for an administrator's credentials, checked by the service's authenticators like any call
    (Prometheus: ``authorization: {credentials_file: ...}``)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, cloud: Cloud | None = None,
                 public: bool = False, path: str = "/metrics") -> None:
        self.app = app
        self.metrics = metrics
        self.cloud = cloud
        self.public = public
        self.path = path

    def _refusal(self, scope: Scope) -> VocloudError | None:
        if self.public:
            return None
        if self.cloud is None:
            return Forbidden("metrics are not public and no authenticator is configured")
        try:
            actor = self.cloud.authenticate_with(_bearer(scope))
        except VocloudError as exc:
            return exc
        return None if actor.is_admin else Forbidden("only an administrator may read the metrics "
                                                     "(or set metrics_public)")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope.get("path") == self.path and scope.get("method") in ("GET", "HEAD"):
            import anyio.to_thread  # the store queries block: off the event loop

            refused = await anyio.to_thread.run_sync(self._refusal, scope)
            if refused is not None:
                err = orjson.dumps(refused.to_dict())
                await send({"type": "http.response.start", "status": refused.status,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(err)).encode())]})
                await send({"type": "http.response.body", "body": err})
                return
            body = await anyio.to_thread.run_sync(self.metrics.exposition)
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", CONTENT_TYPE_LATEST.encode()),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
            return
        status = {"code": 500}

        async def send_wrapper(message: Any) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        started = time.monotonic()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = _route_template(scope)
            method = str(scope.get("method", ""))
            self.metrics.requests.labels(method, route, str(status["code"])).inc()
            self.metrics.request_seconds.labels(method, route).observe(time.monotonic() - started)
