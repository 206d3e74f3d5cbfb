"""MQTT over TLS to the local stack the environment names, for tests and benchmarks.

The stack's broker takes devices and services on a TLS port that requires a
client certificate from the installation's CA (its CN is the user name):
``stack_tls("admin").apply(client)`` before ``client.connect(host, port)``,
:func:`tls_toml` for the ``[mqtt.tls]`` block of a gateway's config and
:func:`edge_tls_toml` for the TLS keys of an edge agent's ``[mqtt]``. They
read ``$THERMOWATCH_STACK_DIR`` like every other test helper.
"""

from __future__ import annotations

from deploy.local.pki import ClientTls
from deploy.local.stack import LocalStack

__all__ = ["edge_tls_toml", "stack_tls", "tls_toml"]


def stack_tls(identity: str, stack: LocalStack | None = None) -> ClientTls:
    """CA, certificate and key of ``identity`` (an MQTT user of ``stack``, by
    default the stack ``$THERMOWATCH_STACK_DIR`` names)."""
    return (stack or LocalStack()).client_tls(identity)


def tls_toml(identity: str, stack: LocalStack | None = None, table: str = "mqtt.tls") -> str:
    """``[mqtt.tls]`` (a gateway's shared TLS block) for ``identity``, as TOML text."""
    import tomli_w

    tls = stack_tls(identity, stack).tls_block()
    return f"[{table}]\n" + tomli_w.dumps(tls)


def edge_tls_toml(identity: str, stack: LocalStack | None = None) -> str:
    """The TLS keys of an edge agent's ``[mqtt]`` section for ``identity``, as TOML
    lines (``tls = true``, ``ca_file``, ``cert_file``, ``key_file``)."""
    import tomli_w

    return tomli_w.dumps(stack_tls(identity, stack).edge_mqtt())
