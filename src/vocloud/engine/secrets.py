"""Site secrets for the worker VMs the site itself creates (the munge key, a batch password).

A worker's batch daemon needs the site's shared secret, but a template is the wrong place for
it: templates are read by whole VOs (a public standard worker by everyone), stored in the
database, and shown by ``template show`` / ``vm show``. So a template only *names* a secret,
``MUNGE_KEY="$SECRET[munge]"`` in its CONTEXT, and the daemon substitutes the value when it
builds that one VM's context seed — which lives in the VM's private run directory (0600) and
nowhere else. The value is the file's bytes, base64-encoded, since keys are binary.

Who receives one: a VM owned by an administrator (Slurm power saving's workers), and a VM
whose creation *admitted* the secret (``VM.site_secrets``): the VO-pool controller creates a
VO's workers as the VO, and only the administrator's site template merged into them names the
secret. A VO member creating a VM that names a secret is refused at creation
(:func:`refuse_for_user`), so a secret never reaches a VM a user asked for.

Where they live: one file per secret in a directory the daemon reads (``VOCLOUD_SECRETS_DIR``,
default ``<data dir>/secrets``). Both must be private to the daemon's user: a directory or file
that others can read is refused, so a mistaken ``chmod`` shows up as a failed boot with the
reason, not as a leak.
"""

from __future__ import annotations

import base64
import stat
from pathlib import Path

from vocloud.errors import InvalidInput, VocloudError
from vocloud.model.secret_refs import Resolver, check_name

MAX_BYTES = 64 * 1024


class SecretError(VocloudError):
    """A secret a VM's context names cannot be given to it; the message says why."""


def _private(path: Path, what: str) -> None:
    mode = path.stat().st_mode
    if mode & 0o077:
        raise SecretError(f"{what} {path} is readable by others (mode {stat.filemode(mode)}); "
                          f"chmod go= {path}")
class SecretDir:
    """Reads secrets from one private directory; a fresh read per VM (rotation needs no restart)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def read(self, name: str) -> str:
        try:
            check_name(name)
        except InvalidInput as exc:
            raise SecretError(exc.message) from None
        path = self.root / name
        try:
            _private(self.root, "secrets directory")
            real = path.resolve(strict=True)
            _private(real, f"secret {name!r}:")
            if not real.is_file():
                raise SecretError(f"secret {name!r}: {real} is not a regular file")
            if real.stat().st_size > MAX_BYTES:
                raise SecretError(f"secret {name!r}: {real} is larger than {MAX_BYTES} bytes")
            data = real.read_bytes()
        except FileNotFoundError:
            raise SecretError(f"no site secret {name!r}: put it in {path} (mode 0600) on the "
                              "daemon's machine") from None
        except PermissionError as exc:
            raise SecretError(f"secret {name!r}: cannot read {path}: {exc.strerror}") from None
        if not data:
            raise SecretError(f"secret {name!r}: {path} is empty")
        return base64.b64encode(data).decode("ascii")


def admitted_only(read: Resolver, vm_id: int, names: str) -> Resolver:
    """The resolver for a VM not owned by an administrator: only the secrets admitted for it
    at creation (``VM.site_secrets``: named by an administrator's site template) are read."""
    allowed = frozenset(names.split())

    def resolve(name: str) -> str:
        if name in allowed:
            return read(name)
        return refusing(vm_id)(name)
    return resolve


def refusing(vm_id: int) -> Resolver:
    """The resolver for a VM that is not the site's: any secret it names is refused."""
    def resolve(name: str) -> str:
        raise SecretError(f"VM {vm_id} names site secret {name!r}, which no administrator's "
                          "template gave it; only the site's worker VMs receive secrets")
    return resolve
