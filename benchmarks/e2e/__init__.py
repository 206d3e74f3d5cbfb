"""End-to-end latency benchmark: device publish -> searchable, and -> webhook.

Run ``python benchmarks/e2e/bench_latency.py --help``; docs/benchmarks.md
says what it measures and shows the results.
"""
