"""The demo: the whole pipeline on a simulated fleet (``thermowatch demo``, ``make demo``).

One file per part:

* :mod:`~thermowatch.demo.run` -- the run record (names, places, ground truth);
* :mod:`~thermowatch.demo.configs` -- the gateway's and processor's configs;
* :mod:`~thermowatch.demo.services` -- gateway and processor as subprocesses;
* :mod:`~thermowatch.demo.plan` -- the incident script as data (pure);
* :mod:`~thermowatch.demo.fleet` -- simulators and real edge agents playing it;
* :mod:`~thermowatch.demo.scenario` -- the script's steps, played on time;
* :mod:`~thermowatch.demo.malformed` -- the burst the gateway must dead-letter;
* :mod:`~thermowatch.demo.monitor` and :mod:`~thermowatch.demo.live` -- what
  the live terminal view reads and shows;
* :mod:`~thermowatch.demo.pipeline` -- one run, start to finish;
* :mod:`~thermowatch.demo.account` -- counting a run (the summary);
* :mod:`~thermowatch.demo.report` -- the tables printed around the live view;
* :mod:`~thermowatch.demo.clean` -- removing old runs (``demo clean``);
* :mod:`~thermowatch.demo.cli` -- the ``demo`` command.

The names the chaos tests and benchmarks build on are importable from here.
Nothing heavy (aiokafka, paho, rich, the edge agent) is imported until used.
"""

from thermowatch.demo.account import account_run
from thermowatch.demo.clean import CleanReport, clean_demo_runs
from thermowatch.demo.configs import gateway_config, merge_config, processor_config
from thermowatch.demo.fleet import DemoFleet
from thermowatch.demo.malformed import MALFORMED_SEQ, malformed_payloads, publish_malformed
from thermowatch.demo.monitor import KafkaLag, SearchWatch
from thermowatch.demo.pipeline import run_pipeline_demo
from thermowatch.demo.plan import FleetPlan, PlannedIncident, plan, steady_plan
from thermowatch.demo.run import DemoRun, demo_sites, new_run
from thermowatch.demo.services import Service, pipeline_services, wait_topics

__all__ = [
    "MALFORMED_SEQ",
    "CleanReport",
    "DemoFleet",
    "DemoRun",
    "FleetPlan",
    "KafkaLag",
    "PlannedIncident",
    "SearchWatch",
    "Service",
    "account_run",
    "clean_demo_runs",
    "demo_sites",
    "gateway_config",
    "malformed_payloads",
    "merge_config",
    "new_run",
    "pipeline_services",
    "plan",
    "processor_config",
    "publish_malformed",
    "run_pipeline_demo",
    "steady_plan",
    "wait_topics",
]
