"""Provider keys kept in the database are encrypted at rest (Fernet: AES-128-CBC with an
HMAC-SHA256, from the `cryptography` package), and only ever shown masked.

An encryption key may be several keys, one per line (or comma-separated in
AIGNE_HUB_ENCRYPTION_KEY): the first seals, any opens. That is how a rotation stays
readable at every moment (`aigne-hub credentials rotate-key`)."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


def mask(secret: str) -> str:
    """A key as it may be shown: its first and last four characters."""
    return f"{secret[:4]}...{secret[-4:]}" if len(secret) > 12 else "****"


class SecretBox:
    def __init__(self, key: bytes) -> None:
        keys = key.replace(b",", b"\n").split()
        if not keys:
            raise ValueError("no encryption key given")
        self.keys = keys
        self._fernet = MultiFernet([Fernet(k) for k in keys])

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def opens(self, sealed: str) -> bool:
        try:
            self._fernet.decrypt(sealed.encode())
        except InvalidToken:
            return False
        return True

    def reseal(self, sealed: str) -> str:
        """The same secret sealed with the first key (ValueError if no key opens it)."""
        try:
            return self._fernet.rotate(sealed.encode()).decode()
        except InvalidToken as exc:
            raise ValueError("a stored provider key cannot be decrypted with these keys") from exc

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken as exc:
            raise ValueError(
                "a stored provider key cannot be decrypted: the encryption key "
                "(AIGNE_HUB_ENCRYPTION_KEY or security.encryption_key_file) is not the one "
                "it was stored with"
            ) from exc


def write_key_file(path: Path, keys: list[bytes]) -> None:
    """Put these keys (one per line, the sealing one first) in the key file in one step: a
    reader sees the old file or the new, never half. Owner-only, owned like the file it
    replaces, through a symlink to its target, and on disk before this returns."""
    target = Path(os.path.realpath(path))
    staged = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    fd = os.open(staged, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(b"\n".join(keys) + b"\n")
            out.flush()
            if target.exists() and os.geteuid() == 0:  # hubs may run as the file's owner
                owner = target.stat()
                os.fchown(out.fileno(), owner.st_uid, owner.st_gid)
            os.fsync(out.fileno())
        os.replace(staged, target)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    folder = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself on disk too
    finally:
        os.close(folder)


def load_box(key: str | None, key_file: str, *, create: bool = False) -> SecretBox | None:
    """The box for the configured key: the key itself, else the key file (made on first use
    when `create`, readable by its owner only); None when there is neither."""
    if key:
        try:
            return SecretBox(key.encode())
        except ValueError as exc:
            raise ValueError(
                "the encryption key must be 32 url-safe base64-encoded bytes "
                "(make one with: python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())')"
            ) from exc
    path = Path(key_file)
    if not path.exists():
        if not create:
            return None
        _make_key_file(path)
    return SecretBox(path.read_bytes().strip())


def _make_key_file(path: Path) -> None:
    """A new key in a file that appears whole, owner-only, and never over a key another
    process just made (keys sealed with a lost key could not be opened again). Written
    aside, then linked into place: a hard link fails if the name exists, so of workers
    making it at once one wins and the others read its key, never a file still empty."""
    staged = path.with_name(f"{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(staged, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(Fernet.generate_key())
            out.flush()
            os.fsync(out.fileno())
        os.link(staged, path)
    except FileExistsError:
        pass
    finally:
        staged.unlink(missing_ok=True)
