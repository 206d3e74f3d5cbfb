"""Detection on simulated equipment (issue 17): false alarms per device-week, time to detect.

Normal weeks and labelled faults come from :mod:`edge_agent.equipment`; every
sample goes through the agent's own :class:`edge_agent.judge.SampleJudge`.
Run with ``python -m benchmarks.detection.run`` (``make detection``); see
``docs/benchmarks.md``. The default configuration per profile is
:func:`benchmarks.detection.configs.edge_config_for`. The harness's own tests
(``test_harness.py``) live beside it, like ``benchmarks/nab``'s.
"""
