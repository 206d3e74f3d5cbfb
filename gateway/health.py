"""``/metrics``, ``/healthz`` and ``/readyz`` for the gateway (see :mod:`thermowatch.health`)."""

from thermowatch.health import HealthServer

__all__ = ["HealthServer"]
