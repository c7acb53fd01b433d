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
re-hashed, and one whose checksum is then wrong is discarded, re-fetched and reported.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from dataclasses import dataclass

from vocloud.drivers.base import HostRef
from vocloud.drivers.storage.qimg import ImageInfo, check_format, inspect
from vocloud.drivers.storage.runner import (
    LOCK_TIMEOUT_RC,
    Runner,
    RunnerFactory,
    local_only,
    locked_argv,
    stderr_text,
)
from vocloud.errors import DriverError

log = logging.getLogger(__name__)

LOCK_WAIT_S = 3600  # another stager may be copying a large image over a slow link
_SHA = re.compile(r"[0-9a-f]{64}")
_NO_SOURCE, _MISMATCH = 3, 5

# $1 source, $2 cached file, $3 wanted sha256. Prints HIT | VERIFIED | [BAD <sum>] FETCHED.
_ENSURE = r"""
set -u
src=$1 final=$2 want=$3
stamp="$final.ok" tmp="$final.part"
state() { stat -c '%s %.9Y %i' -- "$1"; }
if [ -e "$final" ]; then
    seen=; [ -e "$stamp" ] && read -r seen < "$stamp"
    if [ -n "$seen" ] && [ "$(state "$final")" = "$seen" ]; then echo HIT; exit 0; fi
    got=$(sha256sum < "$final" | cut -d' ' -f1)
    if [ "$got" = "$want" ]; then state "$final" > "$stamp"; echo VERIFIED; exit 0; fi
    echo "BAD $got"
    rm -f -- "$final" "$stamp"
fi
if [ ! -f "$src" ]; then echo "image file $src does not exist" >&2; exit 3; fi
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


class ImageCache:
    """Per-host cache of verified base images (see the module docstring for the layout).

    ``root`` is the datastore directory used on hosts that do not set ``DATASTORE_DIR`` in their
    attributes; ``runner_for`` gives the command runner of a host (default: local hosts only).
    """

    def __init__(self, root: str, runner_for: RunnerFactory | None = None,
                 lock_wait_s: float = LOCK_WAIT_S) -> None:
        self.root = root
        self.runner_for = runner_for or local_only
        self.lock_wait_s = lock_wait_s
        self.stats = CacheStats()
        self._mutex = threading.Lock()
        self._info: dict[str, ImageInfo] = {}

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
        run = self.runner_for(host)
        want = normalise_sha(sha256, source_path) if sha256 else self.checksum(host, source_path)
        final = self.cached_path(host, want, fmt)
        # explicit timeout: waiting for the lock plus a copy of our own (a transport's default
        # command timeout is sized for quick commands, not for moving gigabytes)
        result = run(locked_argv(f"{final}.lock", self.lock_wait_s, _ENSURE, [source_path, final, want]),
                     timeout=2 * self.lock_wait_s)
        words = result.stdout.decode(errors="replace").split()
        if result.returncode == _NO_SOURCE:
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
        if result.returncode != 0 or len(words) != 2 or not _SHA.fullmatch(words[1]):
            raise DriverError(f"host {host.name}: cannot checksum {source_path}: {stderr_text(result)}")
        if words[0] == "HASHED":
            with self._mutex:
                self.stats.hashed += 1
        return words[1]

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
