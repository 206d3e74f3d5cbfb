"""Signed remote config: what the config publisher signs (Ed25519) and how a device checks it.

What is signed, byte for byte (:func:`signed_bytes`)::

    b"thermowatch signed_config v1\\n" + key_id (16 ASCII hex digits) + b"\\n" + config

where ``config`` is the encoded ``DeviceConfig`` exactly as it travels in the
:class:`~telemetry_contract.messages.SignedConfig` envelope (never
re-serialised, so no canonical JSON is needed). That config names its
``device_id``, ``site`` and ``version``: changing any of them breaks the
signature, a config signed for one device is refused by another (the topic
check), and the agent refuses a version that is not newer than the one it
runs. The context string keeps a signature made for anything else from
passing as a config signature; the key id in the signed bytes stops a
signature from being relabelled as another key's.

The cryptography is the ``cryptography`` package's (OpenSSL's Ed25519), not
ours. This module needs it (the ``edge`` extra and the tools that publish
configs); ``telemetry_contract`` itself does not import it, so the gateway
and the processor do without.

>>> from telemetry_contract import DeviceConfig
>>> key = generate_private_key()
>>> trusted = trusted_keys([key.public_key()])
>>> dc = DeviceConfig(device_id="d1", site="s", version=2, ts=1_767_225_600_000)
>>> envelope = sign_config(key, dc)
>>> open_signed_config(envelope, trusted, topic="thermowatch/s/d1/config",
...                    now_ms=1_767_225_600_000) == dc
True
>>> import msgspec
>>> forged = msgspec.structs.replace(envelope, config=envelope.config.replace(b'"version":2',
...                                                                          b'"version":9'))
>>> open_signed_config(forged, trusted, now_ms=1_767_225_600_000)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
telemetry_contract.signing.SignatureError: signature: does not verify with key ...
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from telemetry_contract.codec import decode_as, encode
from telemetry_contract.messages import DeviceConfig, SignedConfig

__all__ = [
    "CONTEXT",
    "SignatureError",
    "generate_private_key",
    "key_id",
    "load_private_key",
    "load_public_key",
    "open_signed_config",
    "private_key_pem",
    "public_key_pem",
    "sign_config",
    "signed_bytes",
    "trusted_keys",
]

#: Domain separation: the first bytes of every signed message (version 1 of this scheme).
CONTEXT: Final = b"thermowatch signed_config v1\n"


class SignatureError(ValueError):
    """A signed config (or a key) is not acceptable; the message starts with the field."""


def key_id(public_key: Ed25519PublicKey) -> str:
    """The key's id: the first 16 hex digits of SHA-256 of its 32 raw bytes.

    >>> key_id(load_public_key(public_key_pem(generate_private_key().public_key()))).isalnum()
    True
    """
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def signed_bytes(key: str, config: bytes) -> bytes:
    """The exact bytes a signature covers (see the module docstring).

    >>> signed_bytes("0123456789abcdef", b'{"type":"device_config"}')
    b'thermowatch signed_config v1\\n0123456789abcdef\\n{"type":"device_config"}'
    """
    return CONTEXT + key.encode("ascii") + b"\n" + config


def sign_config(private_key: Ed25519PrivateKey, config: DeviceConfig | bytes) -> SignedConfig:
    """The envelope carrying ``config`` (a ``DeviceConfig`` or its encoded bytes) and its signature.

    Bytes are signed as given (they must decode as a ``DeviceConfig`` naming
    the device and site the envelope is for).
    """
    raw = encode(config) if isinstance(config, DeviceConfig) else bytes(config)
    inner = config if isinstance(config, DeviceConfig) else _peek(raw)
    kid = key_id(private_key.public_key())
    return SignedConfig(
        device_id=inner.device_id,
        site=inner.site,
        key_id=kid,
        config=raw,
        signature=private_key.sign(signed_bytes(kid, raw)),
    )


def _peek(raw: bytes) -> DeviceConfig:
    """The device and site of config bytes about to be signed (validated by the contract)."""
    return decode_as(raw, DeviceConfig, now_ms=2**53 - 1)


def trusted_keys(keys: Iterable[Ed25519PublicKey]) -> dict[str, Ed25519PublicKey]:
    """The public keys a device trusts, by key id."""
    return {key_id(k): k for k in keys}


def open_signed_config(
    envelope: SignedConfig,
    trusted: Mapping[str, Ed25519PublicKey],
    *,
    topic: str | None = None,
    now_ms: int | None = None,
) -> DeviceConfig:
    """The ``DeviceConfig`` inside ``envelope`` once its signature verifies with a trusted key.

    Raises :class:`SignatureError` naming the field (``key_id``: not a
    trusted key; ``signature``: does not verify; ``device_id``/``site``: the
    envelope and the config disagree), or
    :class:`~telemetry_contract.errors.ContractError` when the signed bytes
    are not a valid config for ``topic``'s device. Never returns an unverified
    config: the bytes are decoded only after the signature checks out.
    """
    public_key = trusted.get(envelope.key_id)
    if public_key is None:
        known = ", ".join(sorted(trusted)) or "none"
        raise SignatureError(
            f"key_id: {envelope.key_id} is not a trusted config signing key (trusted: {known})"
        )
    try:
        public_key.verify(envelope.signature, signed_bytes(envelope.key_id, envelope.config))
    except InvalidSignature:
        raise SignatureError(f"signature: does not verify with key {envelope.key_id}") from None
    config = decode_as(envelope.config, DeviceConfig, topic=topic, now_ms=now_ms)
    for field in ("device_id", "site"):
        outer, inner = getattr(envelope, field), getattr(config, field)
        if outer != inner:
            raise SignatureError(f"{field}: envelope says {outer!r}, signed config says {inner!r}")
    return config


def generate_private_key() -> Ed25519PrivateKey:
    """A new random Ed25519 signing key."""
    return Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    """The private key as unencrypted PKCS#8 PEM (keep the file 0600)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_pem(key: Ed25519PublicKey) -> bytes:
    """The public key as SubjectPublicKeyInfo PEM (what devices install)."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_private_key(pem: bytes, *, name: str = "private key") -> Ed25519PrivateKey:
    """An Ed25519 private key from PEM; :class:`SignatureError` naming ``name`` otherwise."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"{name}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{name}: not an Ed25519 key ({type(key).__name__})")
    return key


def load_public_key(pem: bytes, *, name: str = "public key") -> Ed25519PublicKey:
    """An Ed25519 public key from PEM; :class:`SignatureError` naming ``name`` otherwise.

    >>> load_public_key(b"junk", name="public_key_file")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    telemetry_contract.signing.SignatureError: public_key_file: not a PEM public key ...
    """
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"{name}: not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(f"{name}: not an Ed25519 key ({type(key).__name__})")
    return key
