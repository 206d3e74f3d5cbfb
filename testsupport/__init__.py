"""What a test and a benchmark both run: one copy, imported by each.

``tests/`` and ``benchmarks/`` never import each other (``tests/unit/test_layout.py``):
a test must not break because an experiment changed, and an experiment must
not depend on a test module's fixtures. A sequence that both need -- the
chaos test that proves a property and the experiment that measures its
variants -- lives here, in a top-level package of the checkout that neither
owns. It is not installed (pyproject's package list leaves it out) and the
product never imports it; pytest puts the checkout's root on ``sys.path``
(``pythonpath``), benchmarks do it themselves.

* :mod:`testsupport.broker_backlog` -- Mosquitto stopped or killed while it
  holds a backlog for the gateways (``tests/chaos/test_chaos_broker_backlog.py``,
  ``benchmarks/gateway/broker_restart_backlog.py``).
* :mod:`testsupport.search` -- the stack's search server as ``admin`` (HTTPS, CA, password).
* :mod:`testsupport.chaos` -- what proves that a chaos test's fault happened
  (a SIGKILL's exit status, a port refused throughout, counted log events,
  readings past the committed offsets), and late-or-lost for a missing reading.
* :mod:`testsupport.chaos_rig` -- the rig of a whole-pipeline chaos test (the
  private stack, the run, the fleet) and the checks after each fault: every
  reading stored exactly once, every incident alerted exactly once
  (``tests/chaos/test_chaos_pipeline.py``, ``tests/chaos/test_chaos_cluster.py``).
* :mod:`testsupport.hostile` -- hostile inputs of every class issue 14 names,
  from a seeded ``Random`` (the property tests in ``tests/unit`` through
  hypothesis, and ``make fuzz``: ``benchmarks/fuzz``).
* :mod:`testsupport.prerequisites` -- a missing tool skips a test, or fails
  it under ``CI=true``.
"""
