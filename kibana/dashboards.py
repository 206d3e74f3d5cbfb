"""The two dashboards: which panels go where, the controls, the time range.

>>> [d.key for d in DASHBOARDS]
['fleet-overview', 'device-detail']
>>> dash = dashboard(DASHBOARDS[1], IndexNames("tw-"))
>>> dash["id"], [r["id"] for r in dash["references"]][:2]
('tw-dash-device-detail', ['tw-lens-temperature-over-time', 'tw-lens-temperature-band'])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from kibana.dataviews import data_view_id
from kibana.lens import lens_id
from kibana.saved import MIN_KIBANA, compact_json, saved_object
from stagekit.search import indices as schema
from stagekit.search.indices import IndexNames

__all__ = ["DASHBOARDS", "DashboardDef", "dashboard"]

_KQL_ALL: Final = {"query": "", "language": "kuery"}


@dataclass(frozen=True, slots=True)
class DashboardDef:
    """A dashboard: panels (lens key, x, y, w, h), controls, time range, refresh."""

    key: str
    title: str
    description: str
    panels: tuple[tuple[str, int, int, int, int], ...]
    #: (field, title, single select) on the readings data view.
    controls: tuple[tuple[str, str, bool], ...]
    time_from: str
    refresh_ms: int


DASHBOARDS: Final[tuple[DashboardDef, ...]] = (
    DashboardDef(
        "fleet-overview",
        "thermowatch: Fleet overview",
        "Is the fleet healthy? Devices online/offline, temperatures, alerts.",
        (
            ("devices-online", 0, 0, 12, 8),
            ("devices-offline", 12, 0, 12, 8),
            ("open-alerts", 24, 0, 24, 16),
            ("temperature-over-time", 0, 8, 24, 16),
            ("alerts-by-severity", 24, 16, 24, 12),
            ("latest-temperature", 0, 24, 24, 16),
        ),
        (("site", "Site", False), ("device_id", "Device", False)),
        "now-24h",
        30_000,
    ),
    DashboardDef(
        "device-detail",
        "thermowatch: Device detail",
        "One device (pick it in the Device control): temperature, band, anomaly score, alerts.",
        (
            ("temperature-over-time", 0, 0, 48, 14),
            ("temperature-band", 0, 14, 24, 14),
            ("anomaly-score", 24, 14, 24, 14),
            ("open-alerts", 0, 28, 32, 12),
            ("latest-temperature", 32, 28, 16, 12),
        ),
        (("site", "Site", True), ("device_id", "Device", True)),
        "now-6h",
        10_000,
    ),
)


def dashboard(d: DashboardDef, names: IndexNames) -> dict[str, Any]:
    """The saved object of ``d``: its panels and controls, and references to both."""
    panels = []
    refs: list[dict[str, str]] = []
    for n, (key, x, y, w, h) in enumerate(d.panels, start=1):
        index = f"p{n}"
        panels.append(
            {
                "embeddableConfig": {"enhancements": {}},
                "gridData": {"h": h, "i": index, "w": w, "x": x, "y": y},
                "panelIndex": index,
                "panelRefName": f"panel_{index}",
                "type": "lens",
                "version": ".".join(map(str, MIN_KIBANA)),
            }
        )
        refs.append({"id": lens_id(key, names), "name": f"{index}:panel_{index}", "type": "lens"})
    controls: dict[str, Any] = {}
    for order, (field, title, single) in enumerate(d.controls):
        cid = f"control-{schema.READINGS.field(field).name}"
        controls[cid] = {
            "explicitInput": {
                "enhancements": {},
                "fieldName": field,
                "id": cid,
                "selectedOptions": [],
                "singleSelect": single,
                "title": title,
            },
            "grow": True,
            "order": order,
            "type": "optionsListControl",
            "width": "medium",
        }
        refs.append(
            {
                "id": data_view_id(schema.READINGS, names),
                "name": f"controlGroup_{cid}:optionsListDataView",
                "type": "index-pattern",
            }
        )
    ignore = {
        "ignoreFilters": False,
        "ignoreQuery": False,
        "ignoreTimerange": False,
        "ignoreValidations": False,
    }
    options = {
        "hidePanelTitles": False,
        "syncColors": False,
        "syncCursor": True,
        "syncTooltips": False,
        "useMargins": True,
    }
    return saved_object(
        "dashboard",
        f"{names.prefix}dash-{d.key}",
        {
            "controlGroupInput": {
                "chainingSystem": "HIERARCHICAL",
                "controlStyle": "oneLine",
                "ignoreParentSettingsJSON": compact_json(ignore),
                "panelsJSON": compact_json(controls),
            },
            "description": d.description,
            "kibanaSavedObjectMeta": {
                "searchSourceJSON": compact_json({"filter": [], "query": _KQL_ALL})
            },
            "optionsJSON": compact_json(options),
            "panelsJSON": compact_json(panels),
            "refreshInterval": {"pause": False, "value": d.refresh_ms},
            "timeFrom": d.time_from,
            "timeRestore": True,
            "timeTo": "now",
            "title": d.title,
            "version": 1,
        },
        refs,
    )
