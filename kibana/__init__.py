"""thermowatch Kibana dashboards as code.

:mod:`~kibana.objects` (pure: saved objects generated from
:mod:`stagekit.search.indices`, assembled from :mod:`~kibana.saved`,
:mod:`~kibana.dataviews`, :mod:`~kibana.lens`, :mod:`~kibana.panels` and
:mod:`~kibana.dashboards`), :mod:`~kibana.check` (pure: structure,
references and fields against a mapping), :mod:`~kibana.client` (the Kibana
HTTP adapter, requests), :mod:`~kibana.config` (target and credentials),
:mod:`~kibana.app` (wiring) and :mod:`~kibana.testing` (a fake Kibana that
enforces the documented import API). The committed objects live in
``kibana/saved_objects/thermowatch.ndjson``.
"""

from kibana.check import Problem, check_fields, check_structure, parse_ndjson, spec_field_types
from kibana.objects import MIN_KIBANA, build_objects, to_ndjson

__all__ = [
    "MIN_KIBANA",
    "Problem",
    "build_objects",
    "check_fields",
    "check_structure",
    "parse_ndjson",
    "spec_field_types",
    "to_ndjson",
]
