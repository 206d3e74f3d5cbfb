"""stagekit: the ground floor every thermowatch stage is built from.

Below the stages (``edge_agent``, ``gateway``, ``cloud_processor``,
``kibana``, ``deploy``) and above the message contract
(``telemetry_contract``): typed configuration (:mod:`stagekit.config`), the
settings blocks every stage shares, the Kafka and search-server plumbing, one
backoff, the probe HTTP server, paho's buffered reader and the stage command
line skeleton. It imports nothing from the floors above it.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
