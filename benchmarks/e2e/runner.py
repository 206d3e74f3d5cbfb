"""One benchmark run: warm-up, the measured steps, the read-back, the result dict.

:class:`Bench` drives a :class:`~benchmarks.e2e.pipeline.Pipeline` at each
offered rate and measures it with the instruments of
:mod:`benchmarks.e2e.probes`; :mod:`benchmarks.e2e.report` turns the numbers
into percentiles and the summary. The result dict is what ``bench_latency.py``
writes as JSON (its keys are documented in docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from typing import Any

from benchmarks.e2e.cleanup import cleanup
from benchmarks.e2e.pipeline import Pipeline, raise_fd_limit
from benchmarks.e2e.probes import (
    SearchProbe,
    WebhookSink,
    count_readings,
    cpu_seconds,
    rss_mb,
    scrape,
)
from benchmarks.e2e.readback import alert_record_times, anomaly_record_times
from benchmarks.e2e.report import pct, step_line, summarize, webhook_split
from telemetry_contract import kafka_topics

__all__ = ["Bench"]

log = logging.getLogger("bench_e2e")

#: The processor's histogram of bulk request durations (its ``/metrics``).
_BULK = "thermowatch_processor_bulk_latency_seconds"
#: ... and of webhook POSTs (one per attempt).
_POST = "thermowatch_processor_webhook_latency_seconds"


class Bench:
    """One benchmark run: services, workers, probes, steps."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sink = WebhookSink(args.webhook_delay_ms / 1000)
        self.killed_at_ms: int | None = None
        self.passwords: dict[str, str] = {}
        self.pipeline = Pipeline(args, self.sink.url)
        self.rid = self.pipeline.rid
        self.probe: SearchProbe | None = None
        self.anomalies_sent: list[tuple[str, int, int, str]] = []  # device, seq, ts, step

    def stop(self) -> None:
        """Workers, probe, services, receiver, private broker: in that order."""
        self.pipeline.stop_workers()
        if self.probe is not None:
            self.probe.close()
        self.pipeline.stop_services()
        self.sink.close()
        self.pipeline.stop_broker()

    # -- a processor killed in the middle of a step (--kill-processor-at-s) ------

    def _kill_timer(self, start_at: float) -> threading.Thread | None:
        """SIGKILL the first processor ``--kill-processor-at-s`` into the first step."""
        at = self.args.kill_processor_at_s
        procs = self.pipeline.processors
        if at is None or self.killed_at_ms is not None or len(procs) < 2:
            return None
        victim = procs[0]

        def kill() -> None:
            time.sleep(max(0.0, start_at + at - time.time()))
            self.pipeline.killed.add(victim.name)
            self.killed_at_ms = int(time.time() * 1000)
            victim.kill(signal.SIGKILL)
            log.info("event=processor_killed name=%s at_ms=%d", victim.name, self.killed_at_ms)

        thread = threading.Thread(target=kill, name="kill-processor", daemon=True)
        thread.start()
        return thread

    def _takeover(
        self, got: dict[tuple[str, int], int], wanted: set[tuple[str, int]]
    ) -> dict[str, Any] | None:
        """After the kill: when did the anomalies sent in the next 10 s reach the webhook.

        About half the devices were the killed processor's; theirs wait for the group to
        notice (``kafka.session_timeout_ms``), rebalance and the survivor to restore
        the alerts: the last arrival after the kill is the takeover, end to end."""
        kill = self.killed_at_ms
        if kill is None:
            return None
        after = sorted(k for k in wanted if kill <= k[1] < kill + 10_000)
        arrived = [got[k] for k in after if k in got]
        return {
            "killed_at_ms": kill,
            "anomalies_in_10_s_after": len(after),
            "missing": len(after) - len(arrived),
            "last_webhook_after_kill_ms": (max(arrived) - kill) if arrived else None,
            "latency_ms": pct([float(got[k] - k[1]) for k in after if k in got]),
        }

    # -- one step --------------------------------------------------------------

    def step(
        self,
        rate: float,
        seconds: float,
        label: str,
        drain_s: float,
        storm: bool = False,
        *,
        measured: bool = True,
    ) -> dict[str, Any]:
        """Offer ``rate`` for ``seconds``, drain (at most ``drain_s``), measure: one step's dict.

        ``--kill-processor-at-s`` counts from the start of the first ``measured`` step.

        With ``storm``, the storm device sends its edge alerts from the step's start."""
        pipeline = self.pipeline
        posts0 = self.sink.posts
        start_at = time.time() + (2.0 if storm else 0.5)  # a spawned process needs ~1 s
        stormer = pipeline.start_storm(self.passwords, start_at) if storm else None
        w = len(pipeline.workers)
        pids = pipeline.pids()
        cpu0 = {k: cpu_seconds(v) for k, v in pids.items()}
        metrics_urls = [f"http://127.0.0.1:{port}/metrics" for port in pipeline.processor_http]
        m0 = [scrape(u) for u in metrics_urls]
        gen_cpu0 = sum(cpu_seconds(p) or 0.0 for p in pipeline.worker_pids())
        killer = self._kill_timer(start_at) if measured else None
        results = pipeline.run_load(rate, seconds, start_at)
        if killer is not None:
            killer.join()
        storm_report: dict[str, Any] = {}
        if stormer is not None:
            proc, conn = stormer
            if conn.poll(60):
                storm_report = conn.recv()
            proc.join(10)
        load_during = os.getloadavg()
        step_end = time.monotonic()
        load_end = time.time()
        window = max(r["window_s"] for r in results)
        cpu1 = {k: cpu_seconds(v) for k, v in pids.items()}
        m1 = [scrape(u) for u in metrics_urls]
        # Summed over the processors (``--processors``) that answered both scrapes.
        pairs = [(a, b) for a, b in zip(m0, m1, strict=True) if a and b]
        bulk_n = sum(b.get(_BULK + "_count", 0.0) - a.get(_BULK + "_count", 0.0) for a, b in pairs)
        bulk_s = sum(b.get(_BULK + "_sum", 0.0) - a.get(_BULK + "_sum", 0.0) for a, b in pairs)
        post_n = sum(b.get(_POST + "_count", 0.0) - a.get(_POST + "_count", 0.0) for a, b in pairs)
        post_s = sum(b.get(_POST + "_sum", 0.0) - a.get(_POST + "_sum", 0.0) for a, b in pairs)
        gen_cpu1 = sum(cpu_seconds(p) or 0.0 for p in pipeline.worker_pids())
        anomalies = [(d, s, ts) for r in results for d, s, ts in r["anomalies"]]
        self.anomalies_sent += [(d, s, ts, label) for d, s, ts in anomalies]
        # Drain: wait until every sampled document is searchable and every
        # anomaly has reached the webhook (bounded).
        probe = self.probe
        assert probe is not None
        deadline = step_end + drain_s
        wanted = {(d, ts) for d, _s, ts in anomalies}
        while time.monotonic() < deadline:
            got = self.sink.opened()
            if not probe.pending and probe.samples_empty() and wanted <= got.keys():
                break
            pipeline.check_alive()
            time.sleep(0.25)
        drained_s = time.monotonic() - step_end
        got = self.sink.opened()
        lat_b = [float(got[k] - k[1]) for k in wanted if k in got]
        takeover = self._takeover(got, wanted)
        found = probe.take()
        lat_a = [float(found_ms - ts) for _id, ts, found_ms in found]
        not_found = len(probe.pending)
        probe.pending.clear()
        sent = sum(r["sent"] for r in results)
        acked_in_window = sum(r["acked_in_window"] for r in results)
        return {
            "label": label,
            "storm": storm_report or None,
            "webhook_posts": self.sink.posts - posts0,
            "_searchable_samples": lat_a,
            "offered_per_s": rate,
            "seconds": seconds,
            # Wall clock (Unix s): the load's scheduled start and when the last worker reported.
            "load_start_unix": round(start_at, 3),
            "load_end_unix": round(load_end, 3),
            "window_s": round(window, 3),
            "published": sent,
            "published_per_s": round(sent / window, 1),
            "acked_in_window_per_s": round(acked_in_window / window, 1),
            "acked_total": sum(r["acked_total"] for r in results),
            "generator_max_behind_ms": round(
                max(r["max_behind"] for r in results) / max(rate / w, 1e-9) * 1000, 1
            ),
            "generator_saturated": acked_in_window < 0.95 * rate * seconds,
            "searchable_ms": pct(lat_a),
            "searchable_not_found": not_found,
            "webhook_ms": pct(lat_b),
            **({"takeover": takeover} if takeover else {}),
            "anomalies_sent": len(wanted),
            "webhooks_missing": len(wanted) - len(lat_b),
            "drain_s": round(drained_s, 2),
            "processor_bulk_requests": int(bulk_n) if pairs else None,
            "processor_bulk_mean_ms": round(bulk_s / bulk_n * 1000, 1) if bulk_n > 0 else None,
            "webhook_posts_timed": int(post_n),
            "webhook_post_mean_ms": round(post_s / post_n * 1000, 1) if post_n > 0 else None,
            # One dispatcher worker POSTs one change at a time: the share of the
            # step it spent waiting for the receiver (1.0 = never idle).
            "webhook_busy": round(post_s / window, 3) if window > 0 else None,
            "load_avg_1_5_15": [round(x, 2) for x in load_during],
            "cpu_percent": {
                k: round((cpu1[k] - v) / window * 100, 1)  # type: ignore[operator]
                for k, v in cpu0.items()
                if v is not None and cpu1.get(k) is not None
            }
            | {"load_generator": round((gen_cpu1 - gen_cpu0) / window * 100, 1)},
            "rss_mb": {k: rss_mb(v) for k, v in pids.items() if v}
            | {"load_generator": self._generator_rss()},
        }

    def _generator_rss(self) -> float:
        return round(sum(rss_mb(p) or 0.0 for p in self.pipeline.worker_pids()), 1)

    # -- the run ---------------------------------------------------------------

    def run_all(self) -> dict[str, Any]:
        """Start everything, warm up, run every step (and more with ``--find-max``), clean up."""
        a = self.args
        pipeline = self.pipeline
        t_start = time.time()
        load_before = os.getloadavg()
        # One descriptor per device in its broker (and in its worker, with fewer).
        raise_fd_limit(math.ceil(a.devices / a.brokers) + 1024)
        t_users = time.monotonic()
        passwords = self.passwords = pipeline.start_broker()
        users_s = time.monotonic() - t_users
        result: dict[str, Any] = {
            "benchmark": "e2e-latency",
            "run_id": self.rid,
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_start)),
            "command": " ".join(["python", "benchmarks/e2e/bench_latency.py", *sys.argv[1:]]),
            "machine": {
                "cpus": os.cpu_count(),
                "python": sys.version.split()[0],
                "load_avg_before_1_5_15": [round(x, 2) for x in load_before],
            },
            "settings": {
                "devices": a.devices,
                "brokers": a.brokers,
                "workers": a.workers,
                "gateways": a.gateways,
                "processors": a.processors,
                "partitions": pipeline.partitions or None,
                "mqtt": a.mqtt,
                "gateway_linger_ms": a.gateway_linger_ms,
                "gateway_receipts": a.gateway_receipts,
                "refresh_interval": a.refresh_interval,
                "anomalies_per_s": a.anomalies_per_s,
                "samples_per_s": a.samples_per_s,
                "poll_ms": a.poll_ms,
                "processor_kafka": dict(a.processor_kafka or []),
                "processor_aggregates": dict(a.processor_aggregates or []),
                "kill_processor_at_s": a.kill_processor_at_s,
                "device_login": a.device_login,
                "keepalive_s": a.keepalive_s,
                "connect_rate": a.connect_rate,
                "per_address": a.per_address,
                "kafka_topic_prefix": pipeline.run.kafka_prefix,
                "index_prefix": pipeline.run.index_prefix,
                "storm": (
                    {
                        "rounds": a.storm_rounds,
                        "alerts": a.storm_alerts,
                        "alerts_per_s": a.storm_rate,
                        "webhook_delay_ms": a.webhook_delay_ms,
                        "processor_webhook": dict(a.processor_webhook or []),
                    }
                    if a.storm
                    else None
                ),
            },
            "steps": [],
        }
        try:
            self.sink.start()
            pipeline.start_services()
            self.probe = SearchProbe(
                pipeline.endpoints["search"],
                f"{pipeline.run.index_prefix}readings-*",
                pipeline.samples,
                a.poll_ms / 1000,
            )
            self.probe.start()
            brokers = [v for k, v in pipeline.pids().items() if k.startswith("mosquitto")]
            rss0 = sum(rss_mb(p) or 0.0 for p in brokers)
            pipeline.start_workers(passwords)
            rss1 = sum(rss_mb(p) or 0.0 for p in brokers)
            gen = self._generator_rss()
            result["fleet"] = {
                "broker_start_and_users_s": round(users_s, 1),
                "connect_s": pipeline.connect_s,
                "mosquitto_rss_mb_before_connect": round(rss0, 1),
                "mosquitto_rss_mb_connected": round(rss1, 1),
                "mosquitto_kb_per_connection": round((rss1 - rss0) * 1024 / a.devices, 1),
                "load_generator_rss_mb": gen,
                "load_generator_kb_per_connection": round(gen * 1024 / a.devices, 1),
            }
            print(json.dumps(result["fleet"]), flush=True)
            warmup_published = self._warm_up()
            if a.storm:
                self._measure_storm(result)
            else:
                self._measure(result)
            self._count_and_split(result, warmup_published)
            for st in result["steps"]:
                st.pop("_searchable_samples", None)
            result["summary"] = summarize(result["steps"])
            if a.storm:
                result["summary"]["storm"] = result["storm_summary"]
        finally:
            self.stop()
            result["services_log_dir"] = str(pipeline.run.run_dir / "logs")
            if not a.keep:
                result["cleanup"] = asyncio.run(cleanup(pipeline.endpoints, pipeline.run))
            result["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            result["machine"]["load_avg_after_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
        return result

    def _warm_up(self) -> int:
        """Until the whole path answers (subscriptions, group join, index creation);
        not recorded. The readings it published."""
        published = 0
        for attempt in range(10):
            warm = self.step(50.0, 3.0, f"warmup{attempt}", 10.0, measured=False)
            published += int(warm["published"])
            log.info("warm-up %d: %s", attempt, json.dumps(warm))
            if warm["webhooks_missing"] == 0 and warm["searchable_not_found"] == 0:
                return published
        raise RuntimeError("the pipeline did not answer during warm-up")

    def _measure(self, result: dict[str, Any]) -> None:
        """The steps of ``--rates``, and with ``--find-max`` more until one breaks."""
        a = self.args
        rates = list(a.rates)
        i = 0
        while i < len(rates):
            rate = rates[i]
            st = self.step(rate, a.seconds, f"{rate:g}", a.drain_s)
            result["steps"].append(st)
            log.info("step %s", json.dumps(st))
            print(step_line(st), flush=True)
            i += 1
            if i == len(rates) and a.find_max:
                p99 = st["webhook_ms"]["p99"]
                ok = p99 is not None and p99 < 1000 and st["webhooks_missing"] == 0
                if ok and not st["generator_saturated"]:
                    rates.append(rate * a.step_factor)

    def _measure_storm(self, result: dict[str, Any]) -> None:
        """Calm and storm steps interleaved (ABBA...) at each rate, one session;
        per arm the p99 of every searchable sample of its steps."""
        a = self.args
        arms: dict[str, list[float]] = {"calm": [], "storm": []}
        for rate in a.rates:
            for r in range(a.storm_rounds):
                order = ("calm", "storm") if r % 2 == 0 else ("storm", "calm")
                for arm in order:
                    st = self.step(rate, a.seconds, f"{rate:g}-{arm}{r}", a.drain_s, arm == "storm")
                    arms[arm] += st["_searchable_samples"]
                    result["steps"].append(st)
                    log.info("step %s", json.dumps(st))
                    print(step_line(st), st["label"], st["webhook_posts"], flush=True)
        calm, storm = pct(arms["calm"]), pct(arms["storm"])
        result["storm_summary"] = {
            "searchable_ms_calm": calm,
            "searchable_ms_storm": storm,
            "p99_ratio_storm_to_calm": (
                round(storm["p99"] / calm["p99"], 2) if calm["p99"] and storm["p99"] else None
            ),
            "webhook_posts_per_storm_step": [
                s["webhook_posts"] for s in result["steps"] if s["storm"] is not None
            ],
            "webhook_posts_per_calm_step": [
                s["webhook_posts"] for s in result["steps"] if s["storm"] is None
            ],
            "searchable_not_found_storm": sum(
                s["searchable_not_found"] for s in result["steps"] if s["storm"] is not None
            ),
        }

    def _count_and_split(self, result: dict[str, Any], warmup_published: int) -> None:
        """Readings stored against published, and the split of (b) at Kafka, per step."""
        pipeline = self.pipeline
        pattern = f"{pipeline.run.index_prefix}readings-*"
        # Every reading the generator sent, warm-up included, is in the index once
        # (a document's _id is device:seq, so a redelivery cannot add one).
        published = warmup_published + sum(s["published"] for s in result["steps"])
        # A pipeline that fell behind is still storing: wait for it (bounded by
        # --settle-s, and by a minute without progress).
        t0 = time.monotonic()
        stored = count_readings(pipeline.endpoints["search"], pattern)
        moved = t0
        while stored < published and time.monotonic() - t0 < self.args.settle_s:
            if time.monotonic() - moved > 60:
                break
            time.sleep(5.0)
            pipeline.check_alive()
            now = count_readings(pipeline.endpoints["search"], pattern)
            if now != stored:
                stored, moved = now, time.monotonic()
        result["readings_settle_s"] = round(time.monotonic() - t0, 1)
        result["readings_stored"] = stored
        result["readings_acked"] = sum(s["acked_total"] for s in result["steps"])
        result["readings_published_with_warmup"] = published
        result["readings_missing_in_index"] = published - stored
        # Document ids are device:seq: a reading stored twice is one document, so
        # stored == published means every reading once (more would be a stray id).
        result["readings_extra_in_index"] = max(0, stored - published)
        kafka = pipeline.endpoints["kafka"]
        topics = kafka_topics(pipeline.run.kafka_prefix)
        alert_ts = asyncio.run(alert_record_times(kafka, topics.alerts))
        reading_ts, overtaken, complete = asyncio.run(
            anomaly_record_times(
                kafka,
                topics.telemetry,
                self.args.split_budget_s,
                [(d, s) for d, s, _ts, _lab in self.anomalies_sent],
            )
        )
        result["webhook_split_complete"] = complete
        got = self.sink.opened()
        for st in result["steps"]:
            label = st["label"]
            mine = [(d, s) for d, s, _ts, lab in self.anomalies_sent if lab == label]
            st["anomalies_overtaken_in_kafka"] = sum(1 for k in mine if k in overtaken)
            st["webhook_split_ms"] = webhook_split(
                label, self.anomalies_sent, reading_ts, alert_ts, got
            )
