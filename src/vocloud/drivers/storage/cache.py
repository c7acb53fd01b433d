"""The per-host base-image cache: a base crosses to a host once, not once per VM.

Layout, under the host's datastore directory::

    cache/<sha256>.<fmt>        the verified copy every overlay/clone on this host is based on
    cache/<sha256>.<fmt>.ok     "size mtime inode" of that file when its checksum was last verified
    cache/<sha256>.<fmt>.lock   flock(1) lock: one stager fills a given image at a time
    cache/index/<key>           "size mtime inode sha256" of a repository image with no recorded sum

Every check-and-fill runs as **one** ``flock … sh -c`` command on the host: one round trip per
stage (it matters over SSH), and the lock is the kernel's, so it is released when a stager dies and
works between threads, processes and daemons alike. The copy goes to ``.part`` and is renamed into
place only after its sha256 matched and its data was synced to disk, so no reader (and no reader
after a power cut) ever sees a half-copied or unverified base.

A hit is decided by the ``.ok`` stamp, not by re-hashing (hashing 1 GiB per VM would cost more
than the overlay saves): a cached file whose size, mtime or inode changed since it was verified is
re-hashed, and one whose checksum is then wrong is discarded, re-fetched and reported. On a host
that is this machine the stamp is compared in-process (``os.stat`` and one small read, no process
and no lock: the stamp is only written after the checksum matched); anything but a clean hit
takes the locked shell path.

Where the base comes from is the host attribute ``IMAGE_PATH_SHARED``: ``YES``, the host reads the
repository path itself (shared or NFS datastore); ``NO``, the front-end pushes it over the host's
transport; ``AUTO`` (default), the host reads it if it has it and the front-end pushes it if the
host reports the path missing. A push is one command under the same lock: the host answers HIT,
or asks for the bytes (from where a push cut short stopped), which stream over that command's
stdin (:meth:`SshTransport.feed`) onto ``.part``; size and sha256 are checked on the host, then
sync and rename. Stagers waiting on the lock meanwhile find a HIT, so a base crosses the network
once per host.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from typing import Protocol, cast

from vocloud.drivers.base import CommandResult, HostRef
from vocloud.drivers.storage.qimg import MIB, ImageInfo, check_format, inspect
from vocloud.drivers.storage.runner import (
    LOCK_TIMEOUT_RC,
    Runner,
    RunnerFactory,
    local_only,
    locked_argv,
    runs_here,
    stderr_text,
)
from vocloud.drivers.transport.feed import Source
from vocloud.drivers.transport.local import LocalTransport
from vocloud.errors import DriverError

log = logging.getLogger(__name__)

LOCK_WAIT_S = 3600  # another stager may be copying a large image over a slow link
_SHA = re.compile(r"[0-9a-f]{64}")
_NO_SOURCE, _MISMATCH, _SHORT = 3, 5, 6
CHUNK = MIB  # push granularity; SSH flow control keeps at most a window in flight
SHARED_ATTR = "IMAGE_PATH_SHARED"  # YES: the host reads the repository path; NO: push; AUTO
SHARED_MODES = ("YES", "NO", "AUTO")

# Both host-side scripts start alike: with $final and $want set, answer HIT (stamp matches the
# file), VERIFIED (sha256 matches; stamp rewritten) or drop a bad entry (BAD <sum>) and go on.
_CACHED = r"""stamp="$final.ok" tmp="$final.part"
state() { stat -c '%s %.9Y %i' -- "$1"; }
if [ -e "$final" ]; then
    seen=; [ -e "$stamp" ] && read -r seen < "$stamp"
    if [ -n "$seen" ] && [ "$(state "$final")" = "$seen" ]; then echo HIT; exit 0; fi
    got=$(sha256sum < "$final" | cut -d' ' -f1)
    if [ "$got" = "$want" ]; then state "$final" > "$stamp"; echo VERIFIED; exit 0; fi
    echo "BAD $got"
    rm -f -- "$final" "$stamp"
fi
"""

# $1 source, $2 cached file, $3 wanted sha256. Prints HIT | VERIFIED | [BAD <sum>] FETCHED.
_ENSURE = r"""
set -u
src=$1 final=$2 want=$3
""" + _CACHED + r"""if [ ! -f "$src" ]; then echo "image file $src does not exist" >&2; exit 3; fi
rm -f -- "$tmp"
cp --reflink=never -- "$src" "$tmp" || { rm -f -- "$tmp"; exit 4; }
got=$(sha256sum < "$tmp" | cut -d' ' -f1)
if [ "$got" != "$want" ]; then rm -f -- "$tmp"; echo "MISMATCH $got"; exit 5; fi
sync -- "$tmp" && mv -f -- "$tmp" "$final" || exit 4
state "$final" > "$stamp"
echo FETCHED
"""

# $1 source, $2 index entry. Prints KNOWN <sum> | HASHED <sum>.
_CHECKSUM = r"""
set -u
src=$1 entry=$2
if [ ! -f "$src" ]; then echo "image file $src does not exist" >&2; exit 3; fi
now=$(stat -c '%s %.9Y %i' -- "$src")
if [ -e "$entry" ]; then
    read -r s m i sum < "$entry" || true
    if [ "$s $m $i" = "$now" ]; then echo "KNOWN $sum"; exit 0; fi
fi
sum=$(sha256sum < "$src" | cut -d' ' -f1)
if [ ${#sum} -ne 64 ]; then echo "cannot read $src" >&2; exit 4; fi
echo "$now $sum" > "$entry.tmp" && mv -f -- "$entry.tmp" "$entry"
echo "HASHED $sum"
"""

# $1 cached file, $2 wanted sha256, $3 expected size. Runs under the entry's lock for the whole
# transfer. Prints HIT | VERIFIED | [BAD <sum>] SEND <offset> ... PUSHED; after SEND it appends
# the base from byte <offset> on, read from stdin, to .part, checks size and sha256, syncs and
# renames. A push cut short keeps .part (named by the wanted sha256, so it can only hold a prefix
# of that content) and the next push asks for the rest; a .part that fails the checksum is
# removed, so a damaged prefix costs one more full push, never a bad cache entry.
_PUSH = r"""
set -u
final=$1 want=$2 size=$3
""" + _CACHED + r"""have=0
[ -f "$tmp" ] && have=$(stat -c %s -- "$tmp")
if [ "$have" -gt "$size" ]; then rm -f -- "$tmp"; have=0; fi
echo "SEND $have"
cat >> "$tmp" || exit 4
got=$(stat -c %s -- "$tmp")
if [ "$got" != "$size" ]; then echo "SHORT $got $have"; exit 6; fi
got=$(sha256sum < "$tmp" | cut -d' ' -f1)
if [ "$got" != "$want" ]; then rm -f -- "$tmp"; echo "MISMATCH $got $have"; exit 5; fi
sync -- "$tmp" && mv -f -- "$tmp" "$final" || { rm -f -- "$tmp"; exit 4; }
state "$final" > "$stamp"
echo "PUSHED $have"
"""

# $1 cache dir, $2 lock wait. Re-hashes every cached base under its lock; prints BAD <path> per removal.
_SCRUB = r"""
set -u
dir=$1 wait=$2
for f in "$dir"/*.qcow2 "$dir"/*.raw; do
    [ -f "$f" ] || continue
    flock -w "$wait" "$f.lock" sh -c '
        name=${1##*/} want=${name%.*}
        [ -f "$1" ] || exit 0
        got=$(sha256sum < "$1" | cut -d" " -f1)
        if [ "$got" != "$want" ]; then rm -f -- "$1" "$1.ok"; echo "BAD $1"; fi
    ' vocloud-scrub "$f"
done
"""


@dataclass(slots=True)
class CacheStats:
    """What the cache did since it was created: the bench and the tests read these."""

    hits: int = 0  # base already cached and verified
    misses: int = 0  # base copied to the host
    refetches: int = 0  # a cached base failed its checksum and was replaced
    hashed: int = 0  # repository images hashed because no sha256 was recorded
    pushes: int = 0  # bases sent from the front-end to a host that cannot see the repository
    pushed_bytes: int = 0  # bytes those pushes sent
    resumed: int = 0  # pushes that went on from the part a cut push had left on the host


class Feeder(Protocol):
    """A transport that can stream data into a host command (``LocalTransport``, ``SshTransport``)."""

    def feed(self, host: HostRef, argv: list[str], source: Source, ready: bytes = b"SEND",
             timeout: float | None = None) -> tuple[CommandResult, int]: ...


# The host's transport (``transport_for`` in the daemon); used only if it has a ``feed`` method.
FeederFactory = Callable[[HostRef], object]


class SourceMissing(DriverError):
    """The repository image is not at its path on the host (push it, or report it)."""


def shared_mode(host: HostRef) -> str:
    """The host's ``IMAGE_PATH_SHARED`` attribute: ``YES``, ``NO`` or ``AUTO`` (the default)."""
    value = (host.attrs.get(SHARED_ATTR) or "AUTO").strip().upper()
    if value not in SHARED_MODES:
        raise DriverError(f"host {host.name}: {SHARED_ATTR}={value!r} is not one of "
                          f"{', '.join(SHARED_MODES)}")
    return value


def stamp_of(st: os.stat_result) -> str:
    """What the host scripts' ``stat -c '%s %.9Y %i'`` prints for this file."""
    ns = st.st_mtime_ns
    return f"{st.st_size} {ns // 1_000_000_000}.{ns % 1_000_000_000:09d} {st.st_ino}"


class ImageCache:
    """Per-host cache of verified base images (see the module docstring for the layout).

    ``root`` is the datastore directory used on hosts that do not set ``DATASTORE_DIR`` in their
    attributes; ``runner_for`` gives the command runner of a host (default: local hosts only).
    """

    def __init__(self, root: str, runner_for: RunnerFactory | None = None,
                 lock_wait_s: float = LOCK_WAIT_S, transports: FeederFactory | None = None) -> None:
        self.root = root
        self.runner_for = runner_for or local_only
        self.lock_wait_s = lock_wait_s
        self.transports = transports
        self.stats = CacheStats()
        self._mutex = threading.Lock()
        self._info: dict[str, ImageInfo] = {}
        self._local_sums: dict[tuple[str, int, int, int], str] = {}

    def cache_dir(self, host: HostRef) -> str:
        return f"{datastore_dir(host, self.root)}/cache"

    def cached_path(self, host: HostRef, sha256: str, fmt: str) -> str:
        return f"{self.cache_dir(host)}/{sha256}.{fmt}"

    def ensure(self, host: HostRef, source_path: str, sha256: str | None, fmt: str = "qcow2") -> str:
        """Path of the verified cached copy of ``source_path`` on ``host``, copying it if needed.

        ``sha256`` is the checksum recorded in the image repository; empty or ``None`` means "not
        recorded": the image is hashed once on this host and the sum remembered by path and stat.
        A source whose content does not match its recorded sum is refused (DriverError), and
        nothing is left in the cache.
        """
        check_format(fmt, f"image {source_path}")
        mode = shared_mode(host)
        run = self.runner_for(host)
        here = runs_here(run)
        if sha256:
            want = normalise_sha(sha256, source_path)
        elif mode == "NO":
            want = self.local_checksum(source_path)
        else:
            try:
                want = self.checksum(host, source_path)
            except SourceMissing:
                if not self._pushable(host, run, mode, source_path):
                    raise
                want = self.local_checksum(source_path)
        final = self.cached_path(host, want, fmt)
        if here and self._stamp_hit(final):
            # the common case on a local host, decided in-process: no shell, no flock. The stamp
            # is written after the checksum matched; a changed file fails it and goes the slow way
            with self._mutex:
                self.stats.hits += 1
            return final
        if mode == "NO":
            return self._push(host, run, source_path, want, final)
        # explicit timeout: waiting for the lock plus a copy of our own (a transport's default
        # command timeout is sized for quick commands, not for moving gigabytes)
        result = run(locked_argv(f"{final}.lock", self.lock_wait_s, _ENSURE, [source_path, final, want]),
                     timeout=2 * self.lock_wait_s)
        words = result.stdout.decode(errors="replace").split()
        if result.returncode == _NO_SOURCE:
            if self._pushable(host, run, mode, source_path):
                log.info("host %s does not see %s (%s=AUTO): pushing it from the front-end",
                         host.name, source_path, SHARED_ATTR)
                return self._push(host, run, source_path, want, final)
            raise DriverError(f"host {host.name}: {stderr_text(result)}")
        if result.returncode == _MISMATCH:
            raise DriverError(f"image {source_path}: sha256 is {words[-1] if words else '?'}, "
                              f"the repository recorded "
                              f"{want}; the image changed or is damaged, not staging it")
        if result.returncode == LOCK_TIMEOUT_RC:
            raise DriverError(f"host {host.name}: {final} is locked by another staging for more "
                              f"than {self.lock_wait_s:g} s")
        if result.returncode != 0 or not words:
            raise DriverError(f"host {host.name}: cannot cache {source_path}: {stderr_text(result)}")
        with self._mutex:
            if "BAD" in words:
                self.stats.refetches += 1
                log.warning("host %s: cached base %s had sha256 %s, expected %s: re-fetched",
                            host.name, final, words[words.index("BAD") + 1], want)
            if words[-1] == "FETCHED":
                self.stats.misses += 1
            else:
                self.stats.hits += 1
        return final

    def checksum(self, host: HostRef, source_path: str) -> str:
        """sha256 of a repository image, hashed on the host once per (path, size, mtime, inode)."""
        run = self.runner_for(host)
        key = hashlib.sha256(source_path.encode()).hexdigest()
        entry = f"{self.cache_dir(host)}/index/{key}"
        result = run(locked_argv(f"{entry}.lock", self.lock_wait_s, _CHECKSUM, [source_path, entry]),
                     timeout=2 * self.lock_wait_s)
        words = result.stdout.decode(errors="replace").split()
        if result.returncode == _NO_SOURCE:
            raise SourceMissing(f"host {host.name}: {stderr_text(result)}")
        if result.returncode != 0 or len(words) != 2 or not _SHA.fullmatch(words[1]):
            raise DriverError(f"host {host.name}: cannot checksum {source_path}: {stderr_text(result)}")
        if words[0] == "HASHED":
            with self._mutex:
                self.stats.hashed += 1
        return words[1]

    # ------------------------------------------------------------ in-process checks

    @staticmethod
    def _stamp_hit(final: str) -> bool:
        """The host script's HIT test, without a process: the cached file exists and its size,
        mtime and inode are those recorded in ``.ok`` when its checksum was verified."""
        try:
            st = os.stat(final)
            with open(f"{final}.ok", encoding="ascii") as fh:
                seen = fh.readline().strip()
        except (OSError, ValueError):
            return False
        return stat.S_ISREG(st.st_mode) and bool(seen) and seen == stamp_of(st)

    def local_checksum(self, source_path: str) -> str:
        """sha256 of an image on the front-end (for a push), once per (path, size, mtime, inode)."""
        try:
            st = os.stat(source_path)
        except OSError as exc:
            raise DriverError(f"image {source_path}: {exc.strerror} on the front-end") from None
        key = (source_path, st.st_size, st.st_mtime_ns, st.st_ino)
        with self._mutex:
            known = self._local_sums.get(key)
        if known is not None:
            return known
        digest = hashlib.sha256()
        try:
            with open(source_path, "rb") as fh:
                while chunk := fh.read(CHUNK):
                    digest.update(chunk)
        except OSError as exc:
            raise DriverError(f"image {source_path}: cannot read it: {exc.strerror}") from None
        with self._mutex:
            self._local_sums[key] = digest.hexdigest()
            self.stats.hashed += 1
        return digest.hexdigest()

    # ------------------------------------------------------------ push

    def _feeder(self, host: HostRef, run: Runner) -> Feeder | None:
        if self.transports is not None:
            transport = self.transports(host)
            return cast(Feeder, transport) if callable(getattr(transport, "feed", None)) else None
        return LocalTransport() if runs_here(run) else None

    def _pushable(self, host: HostRef, run: Runner, mode: str, source_path: str) -> bool:
        """AUTO mode: the host lacks the path, the front-end has it, and we can stream to the host."""
        return (mode == "AUTO" and not runs_here(run) and os.path.isfile(source_path)
                and self._feeder(host, run) is not None)

    def _push(self, host: HostRef, run: Runner, source_path: str, want: str, final: str) -> str:
        """Send the base from the front-end into ``final`` on ``host``, once per host.

        The host script takes the entry's lock, then either answers HIT (another stager, thread or
        daemon, pushed it meanwhile: this one waited on the lock and sends nothing) or asks for the
        bytes from an offset: 0, or the size of the ``.part`` a push cut short left behind. They
        are appended to ``.part`` over the transport's stdin stream; the host checks size and
        sha256, syncs and renames. A failure leaves nothing at the final name; a checksum failure
        leaves no ``.part`` either."""
        feeder = self._feeder(host, run)
        if feeder is None:
            raise DriverError(f"host {host.name}: cannot push {source_path}: no transport that can "
                              f"stream to this host (pass transports= to the storage driver)")
        try:
            size = os.path.getsize(source_path)
        except OSError as exc:
            raise DriverError(f"image {source_path}: {exc.strerror} on the front-end; "
                              f"cannot push it to host {host.name}") from None
        digest = hashlib.sha256()
        complete = [False]
        started = time.monotonic()
        argv = locked_argv(f"{final}.lock", self.lock_wait_s, _PUSH, [final, want, str(size)])

        def source(arg: bytes) -> Iterable[bytes]:
            offset = int(arg) if arg.isdigit() else -1
            if not 0 <= offset <= size:
                raise DriverError(f"host {host.name}: asked for image {source_path} from byte "
                                  f"{arg.decode(errors='replace')!r}; it has {size} bytes")
            if offset:
                log.info("host %s: resuming the push of %s at %d of %d MiB (kept from a push "
                         "cut short)", host.name, source_path, offset // MIB, size // MIB)
            return self._read_chunks(host, source_path, size, digest, complete, offset)

        # lock wait + the transfer at no less than 1 MB/s
        result, sent = feeder.feed(host, argv, source, ready=b"SEND",
                                   timeout=2 * self.lock_wait_s + size / 1e6)
        lines = result.stdout.decode(errors="replace").splitlines()
        last = lines[-1].split() if lines else []
        verdict, rc = (last[0] if last else ""), result.returncode
        if rc == _MISMATCH:
            got = last[1] if len(last) > 1 else "?"
            kept = int(last[2]) if len(last) > 2 and last[2].isdigit() else 0
            if complete[0] and digest.hexdigest() == want:
                where = (f"in transit, on the host's disk or in the {kept} bytes kept from an "
                         f"earlier push" if kept else "in transit or on the host's disk")
                raise DriverError(
                    f"host {host.name}: pushed copy of image {source_path} arrived with sha256 "
                    f"{got}, expected {want} (the front-end sent the right bytes: corrupted "
                    f"{where}); removed, not staging it")
            raise DriverError(f"image {source_path}: sha256 is {digest.hexdigest()}, the repository "
                              f"recorded {want}; the image changed or is damaged, not staging it")
        if rc == _SHORT:
            raise DriverError(f"host {host.name}: push of {source_path} cut short: the host has "
                              f"{last[1] if len(last) > 1 else '?'} of {size} bytes; kept, the "
                              f"next push sends the rest")
        if rc == LOCK_TIMEOUT_RC:
            raise DriverError(f"host {host.name}: {final} is locked by another staging for more "
                              f"than {self.lock_wait_s:g} s")
        if rc != 0 or verdict not in ("HIT", "VERIFIED", "PUSHED"):
            raise DriverError(f"host {host.name}: cannot push {source_path} into its cache: "
                              f"{stderr_text(result)}")
        resumed = verdict == "PUSHED" and len(last) > 1 and last[1] not in ("", "0")
        with self._mutex:
            bad = next((line.split() for line in lines if line.startswith("BAD ")), None)
            if bad is not None:
                self.stats.refetches += 1
                log.warning("host %s: cached base %s had sha256 %s, expected %s: pushed again",
                            host.name, final, bad[1] if len(bad) > 1 else "?", want)
            if verdict == "PUSHED":
                self.stats.misses += 1
                self.stats.pushes += 1
                self.stats.pushed_bytes += sent
                self.stats.resumed += resumed
            else:
                self.stats.hits += 1
        if verdict == "PUSHED":
            took = max(time.monotonic() - started, 1e-6)
            log.info("host %s: pushed %s (%d MiB%s) into %s in %.1f s (%.0f MiB/s), sha256 verified",
                     host.name, source_path, size // MIB,
                     f", {sent // MIB} MiB of it now" if resumed else "", final, took,
                     sent / took / MIB)
        return final

    @staticmethod
    def _read_chunks(host: HostRef, source_path: str, size: int, digest: hashlib._Hash,
                     complete: list[bool], offset: int = 0) -> Generator[bytes, None, None]:
        """The image from ``offset`` on in CHUNK pieces, all of it hashed (the part before
        ``offset`` too, read but not sent); progress logged every 10 %."""
        sent, step = offset, max(size // 10, CHUNK)
        next_log = offset + step
        try:
            with open(source_path, "rb") as fh:
                left = offset
                while left and (chunk := fh.read(min(CHUNK, left))):
                    digest.update(chunk)
                    left -= len(chunk)
                while chunk := fh.read(CHUNK):
                    digest.update(chunk)
                    sent += len(chunk)
                    if sent >= next_log and sent < size:
                        log.info("host %s: pushing %s: %d of %d MiB", host.name, source_path,
                                 sent // MIB, size // MIB)
                        next_log += step
                    yield chunk
        except OSError as exc:
            raise DriverError(f"image {source_path}: read failed while pushing it to host "
                              f"{host.name}: {exc.strerror}") from None
        complete[0] = True

    # ------------------------------------------------------------ maintenance

    def scrub(self, host: HostRef) -> list[str]:
        """Re-hash every cached base on ``host`` and drop those whose content no longer matches
        their name; returns the dropped paths. Staging trusts the ``.ok`` stamp (size, mtime,
        inode), which an in-place bit flip does not change: a periodic scrub catches that."""
        run = self.runner_for(host)
        result = run(["sh", "-c", _SCRUB, "vocloud-scrub", self.cache_dir(host), f"{self.lock_wait_s:g}"])
        if result.returncode != 0:
            raise DriverError(f"host {host.name}: cache scrub failed: {stderr_text(result)}")
        bad = [line[4:] for line in result.stdout.decode(errors="replace").splitlines()
               if line.startswith("BAD ")]
        with self._mutex:
            for path in bad:
                self._info.pop(path, None)
        for path in bad:
            log.warning("host %s: cached base %s failed its checksum and was removed", host.name, path)
        return bad

    def info(self, run: Runner, cached: str, fmt: str, what: str) -> ImageInfo:
        """``qemu-img info`` of a cached base, asked once per process: the file is named by its
        sha256, so its format and size cannot change while it exists. One that qemu cannot read
        (the repository image itself is damaged) is evicted, so it is not reused."""
        with self._mutex:
            known = self._info.get(cached)
        if known is not None and known.format == fmt:
            return known
        try:
            info = inspect(run, cached, fmt, what)
        except DriverError:
            self.evict(run, cached)
            raise
        with self._mutex:
            self._info[cached] = info
        return info

    def evict(self, run: Runner, cached: str) -> None:
        """Drop a cached base (under its lock) so the next stage fetches it again."""
        with self._mutex:
            self._info.pop(cached, None)
        run(locked_argv(f"{cached}.lock", self.lock_wait_s, 'rm -f -- "$1" "$1.ok"', [cached]))


def datastore_dir(host: HostRef, root: str) -> str:
    """A host's datastore: its ``DATASTORE_DIR`` attribute, else the driver's root."""
    path = host.attrs.get("DATASTORE_DIR") or root
    if not path.startswith("/"):
        raise DriverError(f"host {host.name}: datastore directory {path!r} is not absolute")
    return path.rstrip("/") or "/"


def normalise_sha(value: str, what: str) -> str:
    sha = value.strip().lower()
    if not _SHA.fullmatch(sha):
        raise DriverError(f"image {what}: recorded sha256 {value!r} is not 64 hex digits")
    return sha
