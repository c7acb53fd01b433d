"""One hop of an image distribution: a host that holds a base sends it straight to another host.

The bytes go holder -> child over SSH, never through the front-end. For that the holder needs a
credential on the child for the length of one hop, and nothing more (docs/image-distribution.md):

* a **fresh ed25519 key per hop**, made on the front-end; its private half reaches the holder on
  the stdin of the sender (never argv, never a file outside a 0700 temp dir), and is deleted from
  the holder as soon as its ssh has authenticated;
* its public half goes into the child's ``authorized_keys`` (host attribute ``AUTHORIZED_KEYS``,
  default ``~/.ssh/authorized_keys`` of the transport's user) as
  ``restrict,command="sh <receiver>",from="<holder>",expiry-time="<now + 30 min>"``: no shell,
  no pty, no port/agent/X11 forwarding (so no way to the child's VMs or networks), only from the
  holder's address, and useless after the expiry even if the front-end died before removing it;
* the forced command is a receiver script written for this hop: under the cache entry's lock it
  appends stdin to ``<sha256>.<fmt>.part`` of **this** image only, checks size and sha256, syncs
  and renames (the image cache's own push script, so staging and distribution share one cache);
* the front-end removes the line and the script when the hop ends, whatever the outcome.

The front-end's agent is never forwarded: a forwarded agent lets the holder log in anywhere the
front-end can, as the front-end's user, for as long as the connection lasts.

The sender (:data:`SENDER`, python3's standard library only, as the qemu driver's QMP helper) runs
ssh with exactly the child's host key as the front-end verified it (``HostKeyAlias`` in a temp
known_hosts), answers the receiver's ``SEND <offset>`` by streaming the file from that offset,
hashes its **whole** copy while reading it (so a holder whose own copy is damaged is caught at the
hop and reported as the source's fault), and prints one JSON line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import ipaddress
import json
import secrets
import shlex
from dataclasses import dataclass
from typing import Any, Protocol

import asyncssh

from vocloud.core.distribution import Outcome
from vocloud.drivers.base import CommandResult, HostRef
from vocloud.drivers.storage.cache import _CACHED, _PUSH, SHARED_ATTR, ImageCache
from vocloud.drivers.storage.runner import LOCK_TIMEOUT_RC, locked_argv, stderr_text
from vocloud.drivers.transport.address import parse_ssh
from vocloud.errors import DriverError, HostUnreachable

KEY_LIFETIME = dt.timedelta(minutes=30)  # expiry-time of a hop's key: only the login must fit
AUTHORIZED_KEYS_ATTR = "AUTHORIZED_KEYS"
PEER_ALIAS = "vocloud-distribute-peer"

# $1 cached file, $2 wanted sha256. Under the entry's lock: HIT | VERIFIED | [BAD <sum>] NONE <part bytes>
_PROBE = r"""
set -u
final=$1 want=$2
""" + _CACHED + r"""have=0
[ -f "$tmp" ] && have=$(stat -c %s -- "$tmp")
echo "NONE $have"
"""

# A holder's copy re-hashed whatever its stamp says (after a child found the bytes wrong).
_REVERIFY = r"""
set -u
final=$1 want=$2
rm -f -- "$final.ok"
""" + _CACHED + r"""echo "NONE 0"
"""

# $1 cached file: a given-up host keeps nothing half-written.
_DROP_PART = 'rm -f -- "$1.part"'

# $1 authorized_keys, $2 receiver script path, $3 its text, $4 the key line (under the file's lock).
_INSTALL = r"""
set -u
ak=$1 sp=$2 body=$3 line=$4
umask 077
mkdir -p -- "${sp%/*}" || exit 4
printf '%s\n' "$body" > "$sp" || exit 4
[ -d "${ak%/*}" ] || mkdir -p -m 700 -- "${ak%/*}" || exit 4
printf '%s\n' "$line" >> "$ak" || exit 4
"""

# $1 authorized_keys, $2 receiver script, $3 the key's unique comment. Atomic rewrite (cp -p keeps
# owner and mode), so a concurrent login reads the old file or the new one, never half.
_REMOVE = r"""
set -u
ak=$1 sp=$2 marker=$3
rm -f -- "$sp"
[ -f "$ak" ] || exit 0
grep -q -F -- "$marker" "$ak" || exit 0
tmp="$ak.vocloud-tmp"
cp -p -- "$ak" "$tmp" || exit 4
grep -v -F -- "$marker" "$ak" > "$tmp"
[ $? -le 1 ] || exit 4
mv -f -- "$tmp" "$ak"
"""

#: Runs on the holder: python3 -c SENDER <file> <sha256> <user> <address> <port>; stdin: JSON
#: {"key": <openssh private key>, "host_key": "<type> <base64>"}. Prints one JSON line.
SENDER = r"""
import hashlib, json, os, shutil, subprocess, sys, tempfile
path, want, user, addr, port = sys.argv[1:6]
cfg = json.loads(sys.stdin.read())
out = {"sent": 0, "lines": [], "rc": None, "source": None, "err": "", "offset": None}
tmp = tempfile.mkdtemp(prefix="vocloud-dist-")
try:
    key, known, err = (os.path.join(tmp, n) for n in ("key", "known_hosts", "err"))
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, cfg["key"].encode())
    os.close(fd)
    with open(known, "w") as fh:
        fh.write("%s %s\n" % (cfg["alias"], cfg["host_key"]))
    try:
        src = open(path, "rb")
    except OSError as exc:
        out["err"] = "cannot read %s: %s" % (path, exc.strerror)
        out["rc"] = "source"
        raise SystemExit
    opts = ["IdentitiesOnly=yes", "IdentityAgent=none", "BatchMode=yes", "ForwardAgent=no",
            "StrictHostKeyChecking=yes", "UserKnownHostsFile=" + known,
            "GlobalKnownHostsFile=/dev/null", "HostKeyAlias=" + cfg["alias"],
            "ClearAllForwardings=yes", "ConnectTimeout=10", "ServerAliveInterval=15",
            "ServerAliveCountMax=3", "Compression=no", "LogLevel=ERROR"]
    argv = ["ssh", "-F", "/dev/null", "-T", "-i", key, "-p", port, "-l", user]
    for o in opts:
        argv += ["-o", o]
    with open(err, "wb") as errf:
        p = subprocess.Popen(argv + [addr, "receive"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=errf)
        offset = None
        while True:
            line = p.stdout.readline()
            if not line:
                break
            text = line.decode(errors="replace").strip()
            out["lines"].append(text)
            if text.startswith("SEND "):
                offset = int(text.split()[1])
                break
            if text in ("HIT", "VERIFIED"):
                break
        os.unlink(key)  # authenticated (or failed): the key is of no more use here
        out["offset"] = offset
        digest = hashlib.sha256()
        if offset is not None:
            left, broken = offset, False
            while left:
                chunk = src.read(min(1 << 20, left))
                if not chunk:
                    break
                digest.update(chunk)
                left -= len(chunk)
            while True:
                chunk = src.read(1 << 20)
                if not chunk:
                    break
                digest.update(chunk)
                if not broken:
                    try:
                        p.stdin.write(chunk)
                        out["sent"] += len(chunk)
                    except BrokenPipeError:
                        broken = True
            out["source"] = digest.hexdigest()
        try:
            p.stdin.close()
        except BrokenPipeError:
            pass
        rest = p.stdout.read()
        out["rc"] = p.wait()
        out["lines"] += rest.decode(errors="replace").split("\n")
    with open(err, "rb") as fh:
        out["err"] = fh.read()[-2000:].decode(errors="replace")
finally:
    shutil.rmtree(tmp, ignore_errors=True)
    out["lines"] = [x for x in out["lines"] if x.strip()]
    sys.stdout.write(json.dumps(out) + "\n")
"""


class HostTransport(Protocol):
    """What a hop needs of a host's transport (``SshTransport``; ``host_key`` on children)."""

    def run(self, host: HostRef, argv: list[str], input: bytes | None = None,
            timeout: float | None = None) -> CommandResult: ...


@dataclass(frozen=True, slots=True)
class HopResult:
    outcome: Outcome
    sent: int = 0  # bytes that crossed the network for this hop
    offset: int = 0  # bytes kept from an earlier attempt (resumed from there)
    why: str = ""


class Hops:
    """The I/O of one distribution's hops for one image (``path`` on the front-end, ``sha256``)."""

    def __init__(self, cache: ImageCache, transports: Any, path: str, sha256: str, fmt: str,
                 size: int) -> None:
        self.cache, self.transports = cache, transports
        self.path, self.sha256, self.fmt, self.size = path, sha256, fmt, size

    # ------------------------------------------------------------ helpers

    def final(self, host: HostRef) -> str:
        return self.cache.cached_path(host, self.sha256, self.fmt)

    def _run(self, host: HostRef, argv: list[str], timeout: float | None = None,
             input: bytes | None = None) -> CommandResult:
        transport: HostTransport = self.transports(host)
        return transport.run(host, argv, input=input, timeout=timeout)

    def _locked(self, host: HostRef, body: str, args: list[str]) -> CommandResult:
        final = self.final(host)
        return self._run(host, locked_argv(f"{final}.lock", self.cache.lock_wait_s, body,
                                           [final, *args]),
                         timeout=self.cache.lock_wait_s + 600)

    # ------------------------------------------------------------ checks

    def probe(self, host: HostRef) -> tuple[bool, int]:
        """(holds a verified copy, bytes of a ``.part`` kept from a cut transfer). A cached copy
        with no valid stamp is re-hashed; one that fails is dropped (then: not held)."""
        res = self._locked(host, _PROBE, [self.sha256])
        words = res.stdout.decode(errors="replace").split()
        if res.returncode != 0 or not words:
            raise DriverError(f"host {host.name}: cannot look at {self.final(host)}: "
                              f"{stderr_text(res)}")
        if words[-1] in ("HIT", "VERIFIED"):
            return True, 0
        return False, int(words[-1]) if words[-1].isdigit() else 0

    def reverify(self, host: HostRef) -> bool:
        """Re-hash a holder's copy ignoring its stamp; a bad one is dropped. True: it is good."""
        res = self._locked(host, _REVERIFY, [self.sha256])
        words = res.stdout.decode(errors="replace").split()
        return res.returncode == 0 and bool(words) and words[-1] == "VERIFIED"

    def drop_part(self, host: HostRef) -> None:
        """Best effort: a host given up keeps no ``.part`` (nothing half-written is left)."""
        with contextlib.suppress(DriverError):
            self._locked(host, _DROP_PART, [])

    # ------------------------------------------------------------ the front-end's send

    def from_front_end(self, host: HostRef) -> HopResult:
        """The image cache's own push (resumable, verified on the host, renamed when good)."""
        pushing = dataclasses.replace(host, attrs={**host.attrs, SHARED_ATTR: "NO"})
        before = self.cache.stats.pushed_bytes
        try:
            self.cache.ensure(pushing, self.path, self.sha256, self.fmt)
        except HostUnreachable as exc:
            return HopResult(Outcome.UNREACHABLE, why=str(exc))
        except DriverError as exc:
            return HopResult(Outcome.CHILD_FAILED, self.cache.stats.pushed_bytes - before,
                             why=str(exc))
        return HopResult(Outcome.OK, self.cache.stats.pushed_bytes - before)

    # ------------------------------------------------------------ host to host

    def between(self, holder: HostRef, child: HostRef) -> HopResult:
        """``holder`` sends its verified copy to ``child`` (see the module docstring)."""
        try:
            src, dst = parse_ssh(holder.transport), parse_ssh(child.transport)
        except DriverError as exc:
            return HopResult(Outcome.CHILD_FAILED, why=f"host to host needs ssh hosts: {exc}")
        key = asyncssh.generate_private_key("ssh-ed25519")
        token = secrets.token_hex(8)
        marker = f"vocloud-distribute-{token}"
        final = self.final(child)
        script = f"{final.rsplit('/', 1)[0]}/.distribute/{token}.sh"
        ak = child.attrs.get(AUTHORIZED_KEYS_ATTR) or "$HOME/.ssh/authorized_keys"
        if not ak.startswith(("/", "$HOME/")):
            return HopResult(Outcome.UNREACHABLE, why=f"host {child.name}: {AUTHORIZED_KEYS_ATTR}="
                             f"{ak!r} is not an absolute path")
        for what, value in (("receiver script", script), (AUTHORIZED_KEYS_ATTR, ak)):
            if any(c in value for c in '"\\\n\r'):
                return HopResult(Outcome.UNREACHABLE,
                                 why=f"host {child.name}: {what} path {value!r} has quotes or "
                                     "newlines; refused")
        receiver = "exec " + shlex.join(
            locked_argv(f"{final}.lock", self.cache.lock_wait_s, _PUSH,
                        [final, self.sha256, str(self.size)]))
        expiry = (dt.datetime.now(dt.UTC) + KEY_LIFETIME).strftime("%Y%m%d%H%M%SZ")
        options = ["restrict", f'command="sh {script}"', f'expiry-time="{expiry}"']
        if _is_ip(src.address):
            options.append(f'from="{src.address}"')
        public = " ".join(key.export_public_key("openssh").decode().split()[:2])
        line = f"{','.join(options)} {public} {marker}"
        ak_arg = ak if ak.startswith("/") else ""
        try:
            host_key = self.transports(child).host_key(child)
            home_ak = ak_arg or self._home_keys(child)
            res = self._run(child, locked_argv(f"{home_ak}.vocloud-lock", 60, _INSTALL,
                                               [home_ak, script, receiver, line]))
            if res.returncode != 0:
                return HopResult(Outcome.UNREACHABLE, why=f"host {child.name}: cannot authorize "
                                 f"the sender's key in {home_ak}: {stderr_text(res)}")
        except HostUnreachable as exc:
            return HopResult(Outcome.UNREACHABLE, why=str(exc))
        except DriverError as exc:
            return HopResult(Outcome.CHILD_FAILED, why=str(exc))
        try:
            return self._send(holder, child, src.address, dst, key, host_key)
        finally:
            # if this fails, the key expires by itself (expiry-time); the script is harmless alone
            with contextlib.suppress(DriverError):
                self._run(child, locked_argv(f"{home_ak}.vocloud-lock", 60, _REMOVE,
                                             [home_ak, script, marker]))

    def _home_keys(self, child: HostRef) -> str:
        res = self._run(child, ["sh", "-c", 'printf %s "$HOME"'])
        home = res.stdout.decode(errors="replace").strip()
        if res.returncode != 0 or not home.startswith("/"):
            raise DriverError(f"host {child.name}: cannot tell the home directory of its user")
        return f"{home.rstrip('/')}/.ssh/authorized_keys"

    def _send(self, holder: HostRef, child: HostRef, holder_addr: str, dst: Any,
              key: asyncssh.SSHKey, host_key: str) -> HopResult:
        cfg = json.dumps({"key": key.export_private_key("openssh").decode(),
                          "host_key": host_key, "alias": PEER_ALIAS}).encode()
        argv = ["python3", "-c", SENDER, self.final(holder), self.sha256, dst.user, dst.address,
                str(dst.port)]
        try:
            res = self._run(holder, argv, input=cfg,
                            timeout=2 * self.cache.lock_wait_s + self.size / 1e6 + 120)
        except HostUnreachable as exc:
            return HopResult(Outcome.SOURCE_DOWN, why=str(exc))
        except DriverError as exc:
            return HopResult(Outcome.CHILD_FAILED, why=f"{holder.name} -> {child.name}: {exc}")
        try:
            doc = json.loads(res.stdout.decode(errors="replace").strip().splitlines()[-1])
        except (ValueError, IndexError):
            return HopResult(Outcome.SOURCE_DOWN, why=f"host {holder.name}: the sender failed "
                             f"(python3 missing?): {stderr_text(res)}")
        lines: list[str] = doc.get("lines", [])
        last = lines[-1].split() if lines else []
        verdict = last[0] if last else ""
        sent, offset = int(doc.get("sent") or 0), int(doc.get("offset") or 0)
        where = f"{holder.name} -> {child.name}"
        if doc.get("rc") == "source":
            return HopResult(Outcome.SOURCE_BAD, why=f"host {holder.name}: {doc.get('err')}")
        if doc.get("source") not in (None, self.sha256):
            with contextlib.suppress(DriverError):
                self.reverify(holder)  # re-hashes without trusting the stamp: drops the copy
            return HopResult(Outcome.SOURCE_BAD, sent, offset,
                             f"host {holder.name}: its copy has sha256 {doc['source']}, expected "
                             f"{self.sha256}; dropped, it gets the image again")
        if verdict in ("HIT", "VERIFIED", "PUSHED") and doc.get("rc") == 0:
            return HopResult(Outcome.OK, sent, offset)
        if verdict == "MISMATCH":
            why = f"{where}: the copy arrived with sha256 {last[1] if len(last) > 1 else '?'} " \
                  f"(the sender's was right): removed, redone"
        elif verdict == "SHORT":
            why = f"{where}: cut short at {last[1] if len(last) > 1 else '?'} of {self.size} " \
                  f"bytes; kept as .part, the next attempt sends the rest"
        elif doc.get("rc") == LOCK_TIMEOUT_RC:
            why = f"{where}: the child's cache entry stayed locked"
        else:
            err = str(doc.get("err") or "").strip().splitlines()
            why = f"{where}: ssh exit {doc.get('rc')}: {err[-1] if err else 'no message'}"
        return HopResult(Outcome.CHILD_FAILED, sent, offset, why)


def _is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True
