"""NAB (Numenta Anomaly Benchmark) scoring and the runner for the edge agent's detectors.

See ``docs/benchmarks.md``; run with ``python -m benchmarks.nab.run``.
"""
