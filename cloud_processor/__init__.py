"""thermowatch cloud processor: Kafka -> fleet rules, alerts, aggregates -> search server.

Runs as ``thermowatch processor run`` (:mod:`~cloud_processor.__main__`).
:class:`~cloud_processor.app.Processor` is wiring and lifecycle: it takes its
adapters (the interfaces in :mod:`~cloud_processor.ports`) in the constructor,
and :func:`~cloud_processor.factory.build_processor` builds the real ones from
the config (:mod:`~cloud_processor.config`). One record's way through:

* :mod:`~cloud_processor.batches` decodes a polled batch, routes it to
  documents and the rules -- :mod:`~cloud_processor.rules`, the pure core:
  rules and the alert lifecycle -- and marks the one-minute windows touched;
* :mod:`~cloud_processor.notifiers` publishes the alert changes at once, in
  order, to the Kafka alerts topic; off the write path,
  :mod:`~cloud_processor.feed` reads them back (its own consumer group) into
  the webhook's queue, :mod:`~cloud_processor.dispatch`, from which
  :mod:`~cloud_processor.webhook` sends;
* :mod:`~cloud_processor.chain` runs the writes one at a time, and
  :mod:`~cloud_processor.sink` is what a write stores through
  :mod:`~cloud_processor.storage` (durable bulk writes on :mod:`stagekit.search`),
  with the pure builders :mod:`~cloud_processor.documents` and
  :mod:`~cloud_processor.aggregates`;
* :mod:`~cloud_processor.offsets` says which Kafka offsets may be committed,
  and :mod:`~cloud_processor.kafka` consumes, commits and produces.

Also :mod:`~cloud_processor.metrics` (Prometheus) and
:mod:`~cloud_processor.testing` (fakes of the ports, a cuttable TCP proxy, a
webhook receiver). Only the config and the rules are imported here: no I/O,
no Kafka or search client.
"""

from cloud_processor.config import ProcessorConfig, load_config
from cloud_processor.rules import FleetRules

__all__ = ["FleetRules", "ProcessorConfig", "load_config"]
