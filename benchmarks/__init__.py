"""Benchmarks and experiments: run on demand, never as timed tests (docs/benchmarks.md).

A package of the checkout, not installed. Each folder measures one part:
``contract``, ``edge``, ``gateway``, ``processor``, ``web``, ``e2e`` (the whole
pipeline) and ``nab`` (detection quality). Benchmarks import the product and
``testsupport`` (what a benchmark and a test both run), never ``tests``.
"""
