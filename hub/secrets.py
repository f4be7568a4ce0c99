"""Provider keys kept in the database are encrypted at rest (Fernet: AES-128-CBC with an
HMAC-SHA256, from the `cryptography` package), and only ever shown masked."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken


def mask(secret: str) -> str:
    """A key as it may be shown: its first and last four characters."""
    return f"{secret[:4]}...{secret[-4:]}" if len(secret) > 12 else "****"


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken as exc:
            raise ValueError(
                "a stored provider key cannot be decrypted: the encryption key "
                "(AIGNE_HUB_ENCRYPTION_KEY or security.encryption_key_file) is not the one "
                "it was stored with"
            ) from exc


def stage_key_file(path: Path, key: bytes) -> Path:
    """Write a key beside `path` (as `<name>.new`, owner-only, on disk) for `os.replace` to
    put in place in one step: a reader then sees the old key or the new one, never half."""
    staged = path.with_name(path.name + ".new")
    staged.unlink(missing_ok=True)
    fd = os.open(staged, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key)
        out.flush()
        os.fsync(out.fileno())
    return staged


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
        try:
            # Created owner-only from the start, and never over a key another process just
            # made (keys sealed with a lost key could not be opened again).
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "wb") as out:
                out.write(Fernet.generate_key())
    return SecretBox(path.read_bytes().strip())
