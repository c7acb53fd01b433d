"""``vocloud serve``: the REST API plus the reconcile loops in one process.

The loops run in threads beside uvicorn and stop when the API shuts down (uvicorn turns SIGTERM
and SIGINT into a graceful shutdown). One daemon per data directory is enforced with an flock
that the kernel drops if the daemon is killed, so a restart after ``kill -9`` just works; one
SQLite store with a heartbeat lease (``store_lease.py``). Several daemons may share one
PostgreSQL store: all serve the API, the elected leader runs the loops (``engine/leader.py``,
docs/ha.md).
"""

from __future__ import annotations

import ctypes
import fcntl
import gc
import hmac
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import IO, Any

import uvicorn

from vocloud.api import occi
from vocloud.api.common import check_one_hop
from vocloud.api.distributions import router as distributions_router
from vocloud.api.ec2.app import create_ec2_app
from vocloud.api.host_leases import router as host_leases_router
from vocloud.api.metrics import Metrics, RequestMetrics
from vocloud.api.ops import FrontendTag
from vocloud.api.ops import router as ops_router
from vocloud.api.rest import create_app
from vocloud.api.status import router as status_router
from vocloud.api.xmlrpc.app import xmlrpc_router
from vocloud.app import distribution, host_leases
from vocloud.app.drivers import batch_from, build_registry
from vocloud.batch.sim import SimBatch
from vocloud.config import Settings
from vocloud.core.accounting import Prices
from vocloud.core.prestage import Mode
from vocloud.drivers.registry import DriverCatalog, DriverRegistry, Role
from vocloud.engine import filemodes
from vocloud.engine.leader import Election, Identity, Leadership, agree_on, describe, startup_lock
from vocloud.engine.pools import PoolController
from vocloud.engine.prestage import Prestager, PrestageSettings
from vocloud.engine.reconcile import LoopSettings, Reconciler, policy_from
from vocloud.engine.secrets import SecretDir
from vocloud.engine.store_lease import StoreLease
from vocloud.errors import Conflict, InvalidInput
from vocloud.model.instance_types import parse_instance_types
from vocloud.service.access_keys import Sealer
from vocloud.service.cloud import Cloud
from vocloud.service.distribution import DistributionService
from vocloud.service.frontends import FrontendService
from vocloud.service.policy import VMPolicy
from vocloud.store import migrate
from vocloud.store.db import Database
from vocloud.web.app import dashboard

log = logging.getLogger("vocloud.daemon")

TOKEN_FILE = "admin.token"
#: The site key that seals EC2 secret keys in the store (service/access_keys.py, docs/ec2.md).
ACCESS_KEY_FILE = "access-keys.key"
#: a partial upload untouched this long is an interrupted one (several front-ends, docs/ha.md)
STALE_UPLOAD_S = 600.0


def access_key_sealer(directory: Path) -> Sealer:
    """The sealer of EC2 secrets, its key file (in the data dir, or the shared dir of several
    front-ends: docs/ha.md) created (0600) on first start."""
    path = directory / ACCESS_KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_bytes().strip()
        if path.stat().st_mode & 0o077:
            raise InvalidInput(f"{path} is readable by others; chmod 600 {path}") from None
        try:
            return Sealer(key)
        except ValueError:
            raise InvalidInput(f"{path} does not hold a Fernet key (32 url-safe base64 bytes); restore "
                               "it from a backup, or remove it and make new access keys") from None
    key = Sealer.generate()
    with os.fdopen(fd, "wb") as f:
        f.write(key + b"\n")
    return Sealer(key)


def _new_cloud(db: Database, settings: Settings, catalog: DriverCatalog | None, sealer: Sealer) -> Cloud:
    policy = VMPolicy.from_settings(settings.restricted_attrs, settings.max_vms_per_request,
                                    settings.max_template_bytes, settings.max_template_depth)
    cloud = Cloud(db, catalog, max_reservation_size=settings.max_reservation_size, policy=policy,
                  data_dir=settings.data_dir, protected=[settings.secrets_path],
                  instance_types=parse_instance_types(settings.instance_types), sealer=sealer,
                  pool_site_template=settings.pool_site_template)
    cloud.accounting.prices = Prices(settings.showback_cpu_hour, settings.showback_gib_hour)
    cloud.accounting.site_name = settings.apel_site_name
    cloud.accounting.cloud_service = settings.apel_service
    cloud.audit.retention_days = settings.audit_retention_days
    return cloud


def open_store(settings: Settings, catalog: DriverCatalog | None = None,
               api_worker: bool = False) -> tuple[Database, Cloud]:
    """Open (and migrate) the store; create the admin user on first start. Front-ends of one
    PostgreSQL store start one at a time and must share their key file and shared dir (ha.md).
    ``api_worker``: an extra API process of a running daemon (``api_workers``): its parent
    already migrated the store and may be receiving uploads, so only stale ones are swept."""
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    settings.shared_path.mkdir(mode=0o700, parents=True, exist_ok=True)
    db = Database(settings.database_url, pool_size=settings.db_pool)
    key_path = settings.shared_path / ACCESS_KEY_FILE
    with startup_lock(db):
        migrate.upgrade(db)
        cloud = _new_cloud(db, settings, catalog, access_key_sealer(settings.shared_path))
        if not db.is_sqlite:
            frontends_agree(db, settings, key_path)
        token = cloud.accounts.bootstrap()
        # <data_dir>/datastores/default, 0700 (docs/images.md); on PostgreSQL another front-end
        # may be uploading: only stale partial uploads are swept (docs/ha.md)
        cloud.datastores.ensure_default(0.0 if db.is_sqlite and not api_worker else STALE_UPLOAD_S)
    if token is not None:
        path = settings.data_dir / TOKEN_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        log.info("created user 'admin'; its token is in %s", path)
    return db, cloud


def frontends_agree(db: Database, settings: Settings, key_path: Path) -> None:
    """Refuse to start a front-end whose EC2 key or shared dir differs from the others'
    (docs/ha.md): it could not read the store's EC2 secrets, or would look for the VMs' run
    directories in the wrong place on every host."""
    digest = hmac.new(key_path.read_bytes().strip(), b"vocloud front-end check", "sha256").hexdigest()
    agree_on(db, "access_key", digest[:32],
             f"{key_path} is not the key the other front-ends of this store seal EC2 secrets "
             "with: copy their access-keys.key here (0600), or set shared_dir to their shared "
             "directory (docs/ha.md)")
    shared = str(settings.shared_path.resolve())
    agree_on(db, "shared_dir", shared,
             f"this front-end's shared directory {shared} differs from the other front-ends' of "
             "this store: set shared_dir (VOCLOUD_SHARED_DIR) to theirs (docs/ha.md)")


class Loops:
    """The reconcile loops (and the VO-pool controller, when a batch system is configured) as
    daemon threads sharing one stop event."""

    def __init__(self, reconciler: Reconciler, settings: Settings,
                 pools: Callable[[], Any] | None = None, lease: StoreLease | None = None) -> None:
        self.reconciler = reconciler
        self.settings = settings
        self.pools = pools
        self.lease = lease
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        #: told each pass's duration and whether it failed (the /metrics histograms)
        self.observe: Callable[[str, float, bool], None] | None = None
        self.extra: list[tuple[str, Callable[[], Any], float]] = []  # (name, pass, interval)

    def _run(self, name: str, fn: Callable[[], Any], interval: float) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            failed = False
            try:
                fn()
            except Exception:  # a failing pass is logged and retried, never fatal
                failed = True
                log.exception("%s loop pass failed", name)
            if self.observe is not None:
                self.observe(name, time.monotonic() - started, failed)
            self.stop.wait(max(0.0, interval - (time.monotonic() - started)))

    def start(self) -> None:
        s = self.settings
        plan = [
            ("monitor", self.reconciler.monitor_once, min(1.0, s.monitor_interval)),
            ("scheduler", self.reconciler.schedule_once, s.scheduler_interval),
            ("lifecycle", self.reconciler.lifecycle_once, s.lifecycle_interval),
        ]
        if self.pools is not None:
            plan.append(("pools", self.pools, s.pool_interval))
        if self.lease is not None:
            plan.append(("lease", self._beat, self.lease.ttl / 3))
        plan += self.extra
        for name, fn, interval in plan:
            t = threading.Thread(target=self._run, args=(name, fn, interval), name=f"vocloud-{name}",
                                 daemon=True)
            t.start()
            self.threads.append(t)

    def _beat(self) -> None:
        """Renew the store lease; a daemon that lost it stops at once (store_lease.py)."""
        assert self.lease is not None
        if not self.lease.renew():
            log.critical("another daemon took this store while this one was silent: stopping")
            self.stop.set()
            os.kill(os.getpid(), signal.SIGTERM)

    def join(self, timeout: float = 30.0) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout)


def _lock(data_dir: Path) -> IO[str]:
    f = (data_dir / "vocloud.lock").open("a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        pid = f.read().strip() or "?"
        f.close()
        raise Conflict(f"another vocloud daemon (pid {pid}) is using {data_dir}") from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f


def _check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise InvalidInput(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def _pool_pass(cloud: Cloud, settings: Settings, registry: DriverRegistry,
               distributions: DistributionService | None = None) -> Callable[[], Any] | None:
    """One VO-pool controller pass, or None when no batch system is configured; with
    ``distributions``, it pre-stages pools' images (docs/image-distribution.md)."""
    batch = batch_from(registry, settings)
    if batch is None:
        return None
    prestager = None
    if distributions is not None and settings.pool_prestage != "off":
        prestager = Prestager(distributions, PrestageSettings(
            Mode(settings.pool_prestage), settings.pool_prestage_wait,
            settings.pool_prestage_hosts, settings.pool_prestage_fanout))
    controller = PoolController(cloud, batch, site_max_vms=settings.pool_site_max_vms,
                                site_template=settings.pool_site_template, prestager=prestager)
    if isinstance(batch, SimBatch):
        sim = batch

        def sim_pass() -> Any:
            # no batch daemon runs in a sim guest: register the running workers' nodes for it
            sim.sync_nodes(controller.running_workers())
            return controller.reconcile_once()

        return sim_pass
    return controller.reconcile_once


def _reconcilers(settings: Settings, registry: DriverRegistry) -> Callable[[Cloud], Reconciler]:
    loop_settings = LoopSettings(
        policy=policy_from(settings.sched_policy, settings.sched_rank, settings.max_dispatch,
                           settings.max_host_dispatch),
        boot_timeout=settings.boot_timeout, shutdown_timeout=settings.shutdown_timeout,
        monitor_interval=settings.monitor_interval, host_backoff_max=settings.host_backoff_max,
        lease_drain_lead=settings.host_lease_drain_lead,
    )

    def reconciler_on(c: Cloud) -> Reconciler:
        return Reconciler(c, registry.lazy(Role.VMM), loop_settings,
                          storage=registry.lazy(Role.STORAGE), networks=registry.lazy(Role.NETWORK),
                          secrets=SecretDir(settings.secrets_path), catalog=registry.catalog())

    return reconciler_on


def _wire_app(settings: Settings, registry: DriverRegistry, db: Database, cloud: Cloud,
              metrics: Metrics, me: Identity, role: Callable[[], str], started: float,
              lifespan: Callable[[Any], Any],
              distributions: DistributionService | None = None) -> Any:
    """Every front-end on one app (the same in the leader process and in ``api_workers``).
    ``distributions``: the service the pool controller's pre-stage uses, so both share one
    memory of running distributions (docs/image-distribution.md); default: a new one."""
    cloud.set_console_reader(_reconcilers(settings, registry)(cloud).console)  # any front-end reads consoles
    app = create_app(cloud, lifespan=lifespan, max_request_bytes=settings.max_request_bytes)
    occi.mount(app, cloud, parse_instance_types(settings.instance_types), settings.occi_template)
    app.include_router(xmlrpc_router(settings.max_request_bytes))  # OpenNebula XML-RPC, /RPC2
    app.mount("/ui", dashboard())  # the web dashboard: static files (docs/operations-ui.md)
    app.mount("/ec2", create_ec2_app(cloud, settings.max_request_bytes))  # EC2 Query API (docs/ec2.md)
    # operations (docs/operations.md): accounting and audit routes, /metrics, audit front-end tag
    app.include_router(ops_router())
    # who serves this store and who leads (docs/ha.md)
    app.include_router(status_router(FrontendService(lambda: describe(db, me, role(), started))))
    app.state.host_leases, _ = host_leases.wire(settings, cloud)  # docs/host-leases.md
    app.include_router(host_leases_router())
    # image distribution by a fan-out tree (docs/image-distribution.md)
    app.state.distributions = distributions or distribution.wire(settings, cloud.db, registry)
    app.include_router(distributions_router())
    app.add_middleware(RequestMetrics, metrics=metrics, cloud=cloud, public=settings.metrics_public)
    app.add_middleware(FrontendTag)
    check_one_hop(app)  # every Who route authenticates in its own threadpool call
    return app


def build(settings: Settings) -> tuple[Any, Loops | Leadership, Cloud]:
    """The app, what runs the loops (SQLite: the loops under the store lease; PostgreSQL: the
    leader election, which runs them while this front-end leads) and the service."""
    registry = build_registry(settings)
    db, cloud = open_store(settings, registry.catalog())
    started = time.time()
    metrics = Metrics(cloud.db)
    reconciler_on = _reconcilers(settings, registry)
    # image distribution by a fan-out tree (docs/image-distribution.md): the REST routes and the
    # pool controller's pre-stage share one service (one memory of running distributions)
    distributions = distribution.wire(settings, cloud.db, registry)

    def loops_on(store: Database, lease: StoreLease | None = None) -> Loops:
        """One term's loops: a fresh service on ``store`` (a leader's: fenced, engine/leader.py),
        so the pool controller's crash repair starts after the previous term ended."""
        sealer = cloud.access_keys.sealer
        c = cloud if store is db else _new_cloud(store, settings, registry.catalog(), sealer)
        loops = Loops(reconciler_on(c), settings, _pool_pass(c, settings, registry, distributions),
                      lease)
        loops.observe = metrics.observe_loop
        _, lease_loop = host_leases.wire(settings, c)  # leased hypervisors (docs/host-leases.md)
        if lease_loop is not None:
            loops.extra.append(("host-leases", lease_loop, settings.monitor_interval))
        return loops

    me = Identity.here(str(settings.data_dir.resolve()))
    runner: Loops | Leadership
    if db.is_sqlite:
        lease = StoreLease(cloud.db, settings.data_dir, ttl=settings.store_lease_ttl)
        lease.acquire()  # before any loop runs: one daemon per SQLite store
        runner = loops_on(db, lease)
    else:
        runner = Leadership(db, Election(settings.database_url), me, loops_on, poll=settings.leader_poll)

    def role() -> str:
        return "leader" if isinstance(runner, Loops) or runner.leading is not None else "follower"

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        runner.start()
        log.info("vocloud %s serving on %s (store: %s%s)", __import__("vocloud").__version__,
                 settings.url, settings.database_url.split("@")[-1],
                 "" if db.is_sqlite else "; the loops run on the elected leader")
        try:
            yield
        finally:
            log.info("stopping loops")
            runner.join()
            if isinstance(runner, Loops) and runner.lease is not None:
                try:
                    runner.lease.release()
                except Exception:  # the store may be gone; the lease then expires by itself
                    log.exception("could not release the store lease")
            cloud.db.dispose()

    app = _wire_app(settings, registry, db, cloud, metrics, me, role, started, lifespan,
                    distributions)
    return app, runner, cloud


def build_api_worker(settings: Settings) -> tuple[Any, Cloud]:
    """The app of one extra API process (``api_workers`` > 1): every front-end on the same
    store, and no loops: those run in the daemon's first process only (its store lease on
    SQLite, its election on PostgreSQL), which started this one."""
    registry = build_registry(settings)
    db, cloud = open_store(settings, registry.catalog(), api_worker=True)
    started = time.time()
    me = Identity.here(str(settings.data_dir.resolve()))

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        try:
            yield
        finally:
            cloud.db.dispose()

    app = _wire_app(settings, registry, db, cloud, Metrics(cloud.db), me, lambda: "api-worker",
                    started, lifespan)
    return app, cloud


#: libraries that log every connection and command at INFO (asyncssh logged the whole QMP helper
#: script on every call: 13,597 of 22,375 daemon log lines in 7 minutes with one SSH host). They
#: speak at WARNING unless the daemon runs at ``log_level = "debug"``.
CHATTY_LIBRARIES = ("asyncssh",)


def quiet_libraries(level: str) -> None:
    if level.lower() != "debug":
        for name in CHATTY_LIBRARIES:
            logging.getLogger(name).setLevel(logging.WARNING)


def _exit_cleanly(_sig: int, _frame: Any) -> None:
    raise SystemExit(0)


def _die_with_parent(parent: int) -> None:
    """Linux: SIGTERM this process when its parent dies (even by kill -9), so an API worker
    never outlives the daemon that holds the store lease and runs the loops."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the parent still stops its workers
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        raise SystemExit(0)


#: How long an idle kept-alive connection stays open (uvicorn's default: 5 s). Longer than the
#: idle expiry of common clients (httpx: 5 s), so that the client closes an idle connection
#: first: with equal timeouts a client that reused a connection just as the server closed it got
#: a ReadError (0-5 per 60 s run of the 50-client bench, docs/performance.md).
KEEP_ALIVE_S = 30


def freeze_startup_heap() -> None:
    """Move everything built at startup (the app, its routes and schemas, SQLAlchemy's
    mappers, the drivers) out of the garbage collector's sight. A full collection walked
    those objects every few seconds under load: ~95 ms each, with every thread stopped, which
    is a p99 of its own (docs/performance.md, "REST request path"). They live as long as the
    process, so no collection could free them; what requests allocate is still collected."""
    gc.collect()
    gc.freeze()


def listening_socket(host: str, port: int) -> socket.socket:
    """One API process's listening socket; every process of a daemon has its own on the same
    port (``SO_REUSEPORT``), and the kernel spreads new connections over them evenly. Why not
    one socket shared by all: the process whose event loop woke first accepted every
    connection waiting (asyncio accepts up to the backlog at a wake-up) — 46 of 50 clients'
    keep-alive connections went to one process while the other's core idled (docs/
    performance.md, session 12). Another user cannot join the port: the kernel admits only
    sockets of the same user to it (and ``_check_port`` refuses a port already in use)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def _api_worker(settings: Settings, port: int, parent: int) -> None:
    """One extra API process (``api_workers``): the same front-ends on a listening socket of
    its own on the daemon's port (:func:`listening_socket`), no loops."""
    _die_with_parent(parent)
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_libraries(settings.log_level)
    os.umask(0o077)
    app, _cloud = build_api_worker(settings)
    freeze_startup_heap()
    config = uvicorn.Config(app, log_level=settings.log_level.lower(), access_log=False,
                            timeout_graceful_shutdown=10, timeout_keep_alive=KEEP_ALIVE_S)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_cleanly)
    sock = listening_socket(settings.host, port)
    uvicorn.Server(config).run(sockets=[sock])


def start_api_workers(settings: Settings, port: int) -> list[BaseProcess]:
    """``api_workers - 1`` more processes serving ``port`` (started, not forked: the daemon
    has threads and open store connections by now)."""
    ctx = multiprocessing.get_context("spawn")
    procs: list[BaseProcess] = []
    for i in range(settings.api_workers - 1):
        p = ctx.Process(target=_api_worker, args=(settings, port, os.getpid()),
                        name=f"vocloud-api-{i + 1}", daemon=False)
        p.start()
        procs.append(p)
    return procs


def stop_api_workers(procs: list[BaseProcess], timeout: float = 15.0) -> None:
    for p in procs:
        if p.is_alive():
            p.terminate()  # SIGTERM: uvicorn's graceful shutdown
    deadline = time.monotonic() + timeout
    for p in procs:
        p.join(max(0.1, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join(5)


def serve(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_libraries(settings.log_level)
    os.umask(0o077)  # everything the daemon creates is its user's alone (engine/filemodes.py)
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    filemodes.secure(settings)  # fixes looser modes, logs them; FileModeError: exit 2
    lock = _lock(settings.data_dir)
    workers: list[BaseProcess] = []
    try:
        _check_port(settings.host, settings.port)
        app, _loops, _cloud = build(settings)
        freeze_startup_heap()
        config = uvicorn.Config(app, host=settings.host, port=settings.port,
                                log_level=settings.log_level.lower(), access_log=False,
                                timeout_graceful_shutdown=10, timeout_keep_alive=KEEP_ALIVE_S)
        # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal; these
        # handlers turn that into a clean exit status 0 after the shutdown has completed.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, _exit_cleanly)
        if settings.api_workers > 1:
            # several processes, a listening socket each on one port (listening_socket): this
            # one also runs the loops; the others serve requests only
            sock = listening_socket(settings.host, settings.port)
            workers = start_api_workers(settings, sock.getsockname()[1])
            uvicorn.Server(config).run(sockets=[sock])
        else:
            uvicorn.Server(config).run()
        log.info("vocloud stopped")
    finally:
        stop_api_workers(workers)
        lock.close()
