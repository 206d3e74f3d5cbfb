"""Gateway benchmark (MQTT -> Kafka throughput beside its limits) and the broker-restart experiment.

Run ``python benchmarks/gateway/bench.py --help`` and
``python benchmarks/gateway/broker_restart_backlog.py --help``; docs/benchmarks.md
says what they measure and shows the results.
"""
