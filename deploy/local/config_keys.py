"""The config publisher's Ed25519 key pair: made once, private key 0600 from the start.

``write_key_pair`` serves ``thermowatch config keygen`` and the local stack,
which makes ``<stack>/config-signing.key`` (and ``.pub``) at its first start:
the demo fleet and every ``thermowatch devices add`` bundle trust that public
key, and ``thermowatch config publish`` signs with the private one.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Final

from telemetry_contract.signing import (
    generate_private_key,
    key_id,
    load_private_key,
    private_key_pem,
    public_key_pem,
)

__all__ = ["PRIVATE_KEY_NAME", "PUBLIC_KEY_NAME", "ensure_key_pair", "write_key_pair"]

PRIVATE_KEY_NAME: Final = "config-signing.key"
PUBLIC_KEY_NAME: Final = "config-signing.pub"


def write_key_pair(private: Path, public: Path) -> str:
    """A new key pair: ``private`` (mode 0600, never over an existing file) and ``public``.

    The private key is written to a temporary 0600 file (``os.open``, never a
    ``chmod`` afterwards) and linked into place, so no reader ever sees half a
    key and an existing key is never replaced (:class:`FileExistsError`).
    Returns the key id.
    """
    key = generate_private_key()
    tmp = private.with_name(f".{private.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(private_key_pem(key))
            fh.flush()
            os.fsync(fh.fileno())
        os.link(tmp, private)  # atomic, and refuses to replace an existing key
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _write_public(public, public_key_pem(key.public_key()))
    return key_id(key.public_key())


def ensure_key_pair(directory: Path) -> tuple[Path, Path]:
    """``directory``'s key pair, made on first use; returns (private, public) paths.

    Safe when two processes ask at once: one key is made, both read it.
    """
    private, public = directory / PRIVATE_KEY_NAME, directory / PUBLIC_KEY_NAME
    if not private.exists():
        directory.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            write_key_pair(private, public)
    if not public.exists():  # another process made the key and is writing its .pub
        key = load_private_key(private.read_bytes(), name=str(private))
        _write_public(public, public_key_pem(key.public_key()))
    return private, public


def _write_public(path: Path, pem: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(pem)
    tmp.replace(path)
