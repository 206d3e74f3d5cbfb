"""Live web view for installs without Kibana (``thermowatch web``).

Shows each device's latest temperature, a sparkline, online/offline state and
the open alerts, pushed to the browser within a second by server-sent events.
Reads the search server the processor writes and follows its Kafka topics.
"""

__all__: list[str] = []
