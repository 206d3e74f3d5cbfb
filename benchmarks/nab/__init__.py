"""NAB (Numenta Anomaly Benchmark) scoring and the runner for the edge agent's detectors.

See ``docs/benchmarks.md``; run with ``python -m benchmarks.nab.run``.

The scorer's and the runner's own tests (``test_scorer.py``, ``test_run.py``, ``test_corpus.py``)
live here, beside the code they test, and ``make test`` collects them
(``benchmarks/nab`` is in pytest's ``testpaths``): they test the benchmark,
not the product, so they stay out of ``tests/``, which never imports
``benchmarks`` (``tests/unit/test_layout.py``).
"""
