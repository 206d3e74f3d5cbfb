"""thermowatch cloud processor: Kafka -> fleet rules, alerts, aggregates -> search server.

Stage layout: :mod:`~cloud_processor.config` (typed settings),
:mod:`~cloud_processor.rules` (the pure core: rules and alert lifecycle),
:mod:`~stagekit.search.indices` and :mod:`~cloud_processor.documents` (pure:
index layout, field definitions, documents, bulk bodies),
:mod:`~cloud_processor.aggregates` (pure: one-minute windows),
:mod:`~stagekit.search.api` (the search port: requests as data) with its
adapters :mod:`~stagekit.search.backends` and
:mod:`~stagekit.search.backends`, :mod:`~cloud_processor.storage`,
:mod:`~cloud_processor.kafka`, :mod:`~cloud_processor.webhook`,
:mod:`~cloud_processor.metrics` and :mod:`~cloud_processor.app` (the loop).
"""

from cloud_processor.config import ProcessorConfig, load_config
from cloud_processor.rules import FleetRules
from stagekit.search.indices import INDEXES, FieldSpec, IndexNames, IndexSpec
from telemetry_contract import Alert, AlertChange, AlertStatus, ChangeKind, Rule

__all__ = [
    "INDEXES",
    "Alert",
    "AlertChange",
    "AlertStatus",
    "ChangeKind",
    "FieldSpec",
    "FleetRules",
    "IndexNames",
    "IndexSpec",
    "ProcessorConfig",
    "Rule",
    "load_config",
]
