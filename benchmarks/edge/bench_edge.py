"""Edge agent benchmarks (not tests): CPU per reading, peak RSS, simulator capacity.

    python benchmarks/edge/bench_edge.py agent --sensors 8 --seconds 120
    python benchmarks/edge/bench_edge.py agent --sensors 8 --seconds 120 --detector context
    python benchmarks/edge/bench_edge.py agent --sensors 8 --seconds 60 --receipts both
    python benchmarks/edge/bench_edge.py agent --sensors 8 --seconds 120 --tls both
    python benchmarks/edge/bench_edge.py simulator --steps 50

``agent`` runs the real agent in this process (fake w1 tree written by a
separate simulator process, mock GPIO pins, outbox with synchronous=FULL,
QoS 1 to a private Mosquitto) and reports process CPU time (all threads:
sensor reads, parsing, detection, outbox, paho) divided by readings stored,
plus peak RSS. With receipts on, the consumer (in its own process) also acts
as the gateway: every 0.2 s it publishes a receipt for the readings it got;
``--receipts both`` runs off then on and prints the ratio. ``--tls on``: the
broker takes MQTT over TLS with client certificates only (the local stack's
listener: a CA of the run, ``require_certificate``, ``use_identity_as_username``)
and the agent connects with its certificate; ``--tls both`` runs plain then TLS
and prints the ratio. ``simulator``
measures how many w1_slave files per second one simulator process writes
for a 400-probe fleet.
"""

from __future__ import annotations

import argparse
import gc
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from deploy.local.stack import free_port  # noqa: E402


def bench_agent(
    sensors: int,
    seconds: float,
    interval: float,
    synchronous: str,
    mqtt: bool,
    detector: str | None = None,
    profile: str | None = None,
    receipts: bool = False,
    tls: bool = False,
) -> float:
    from gpiozero.pins.mock import MockFactory

    from edge_agent.app import EdgeAgent
    from edge_agent.config import loads_config

    work = Path(tempfile.mkdtemp(prefix="tw-bench-"))
    port = free_port()
    conf = work / "mosquitto.conf"
    listener = f"listener {port} 127.0.0.1\n"
    agent_tls = ""
    consumer_args: list[str] = []
    if tls:  # the local stack's certificate listener, with a CA of this run
        from deploy.local.pki import Pki

        pki = Pki(work / "pki")
        pki.ensure_server("127.0.0.1")
        cert, key = pki.issue("bench-001")
        consumer_args = [str(pki.ca_file), *map(str, pki.issue("bench-consumer"))]
        listener += (
            f"cafile {pki.ca_file}\ncertfile {pki.server_cert}\nkeyfile {pki.server_key}\n"
            "require_certificate true\nuse_identity_as_username true\n"
        )
        agent_tls = f'tls = true\nca_file = "{pki.ca_file}"\ncert_file = "{cert}"\n'
        agent_tls += f'key_file = "{key}"\n'
    conf.write_text(
        f"{listener}allow_anonymous true\nuser root\npersistence false\nlog_dest none\n"
    )
    broker = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)])
    # The gateway's part, in its own process (its CPU is not the agent's): without a
    # subscriber the broker answers PUBACK 16 and the agent keeps re-sending.
    consumer = start_consumer(port, receipts, consumer_args) if mqtt else None
    scenario = work / "bench.toml"
    scenario.write_text(
        f"seed = 1\ninterval_s = {interval}\nduration_s = {seconds + 30}\n"
        f'[fleet]\ndevices = 1\ndevice_prefix = "bench-"\nsensors_per_device = {sensors}\n'
    )
    tree = work / "w1"
    sim = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_agent",
            "simulate",
            "--scenario",
            str(scenario),
            "--out",
            str(tree),
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
    )
    root = tree / "bench-001"
    deadline = time.monotonic() + 20
    while len(list(root.glob("28-*/w1_slave"))) < sensors and time.monotonic() < deadline:
        time.sleep(0.1)
    cfg = loads_config(
        f"""
[device]
device_id = "bench-001"
site = "bench"
state_dir = "{work / "state"}"
[sensors]
w1_root = "{root}"
[sampling]
interval_s = {interval}
[gpio]
pin_factory = "mock"
[outbox]
synchronous = "{synchronous}"
receipts = {"true" if receipts else "false"}
[mqtt]
port = {port}
{agent_tls}"""
        + (f'[detector]\nname = "{detector}"\n' if detector else "")
    )
    agent = EdgeAgent(cfg, pin_factory=MockFactory())
    stop = threading.Event()
    agent.start(mqtt=mqtt)
    run = agent.run
    if profile:  # the main loop under cProfile (inflates CPU: for the split, not the total)
        import cProfile

        def run(stop: threading.Event) -> None:
            with cProfile.Profile(time.thread_time) as prof:  # CPU time, not wall
                agent.run(stop)
            prof.dump_stats(profile)

    t = threading.Thread(target=run, args=(stop,))
    time.sleep(2)  # connect, first rounds (not measured)
    t.start()
    time.sleep(3)
    gc_stats = GcStats()
    gc.callbacks.append(gc_stats)
    cpu0, wall0, n0 = time.process_time(), time.monotonic(), agent.readings_stored
    threads0 = thread_cpu()
    time.sleep(seconds)
    cpu1, wall1, n1 = time.process_time(), time.monotonic(), agent.readings_stored
    gc.callbacks.remove(gc_stats)
    threads1 = thread_cpu()
    per_thread = {
        k: round((v - threads0.get(k, 0.0)) * 1e6 / max(1, n1 - n0)) for k, v in threads1.items()
    }
    stop.set()
    t.join()
    backlog = agent.outbox.stats().depth
    applied, awaiting = agent.receipts_applied, agent.outbox.stats().awaiting_receipt
    agent.shutdown()
    sim.terminate()
    sim.wait()
    delivered = stop_consumer(consumer) if consumer is not None else None
    broker.terminate()
    broker.wait()
    shutil.rmtree(work, ignore_errors=True)
    n = n1 - n0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"agent: sensors={sensors} interval_s={interval} synchronous={synchronous} mqtt={mqtt} "
        f"receipts={receipts} tls={tls} receipts_applied={applied} awaiting_at_end={awaiting} "
        f"detector={agent.detector.name} "
        f"wall_s={wall1 - wall0:.1f} "
        f"readings={n} cpu_s={cpu1 - cpu0:.3f} cpu_us_per_reading={(cpu1 - cpu0) * 1e6 / n:.0f} "
        f"peak_rss_mb={rss_mb:.1f} backlog_at_end={backlog} "
        f"messages_delivered={delivered} publish_refusals={agent.publish_refusals}"
    )
    print("  cpu_us_per_reading by thread:", per_thread)
    print(
        f"  gc in the window: collections by generation {gc_stats.count}, "
        f"cpu_ms={gc_stats.cpu_s * 1000:.1f}, frozen_objects={gc.get_freeze_count()}"
    )
    return (cpu1 - cpu0) * 1e6 / n


_CONSUMER = """
import json, signal, sys, threading, time
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

count = 0
receipts = sys.argv[2] == "1"
seqs = {}  # (site, device) -> seqs got since the last receipt
lock = threading.Lock()

def on_message(client, userdata, msg):
    global count
    parts = msg.topic.split("/")
    if parts[-1] == "receipt":
        return
    count += 1
    if receipts and parts[-1] == "telemetry":
        seq = json.loads(msg.payload).get("seq")
        if seq is not None:
            with lock:
                seqs.setdefault((parts[1], parts[2]), []).append(seq)

def send_receipts():  # the gateway's part: one receipt per device per 0.2 s
    while True:
        time.sleep(0.2)
        with lock:
            got = dict(seqs)
            seqs.clear()
        for (site, device), s in got.items():
            ranges = []
            for x in sorted(set(s)):
                if ranges and x == ranges[-1][1] + 1:
                    ranges[-1][1] = x
                else:
                    ranges.append([x, x])
            body = {"type": "receipt", "device_id": device, "site": site,
                    "ts": int(time.time() * 1000), "ranges": ranges[:256], "gateway_id": "bench"}
            c.publish(f"thermowatch/{site}/{device}/receipt", json.dumps(body), qos=0)

c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
c.on_message = on_message
c.on_connect = lambda c, u, f, rc, p: c.subscribe("thermowatch/#", qos=0)
c.on_subscribe = lambda c, u, mid, rcs, p: print("ready", flush=True)
signal.signal(signal.SIGTERM, lambda *a: c.disconnect())
if receipts:
    threading.Thread(target=send_receipts, daemon=True).start()
if len(sys.argv) > 3:  # TLS: CA, certificate, key
    c.tls_set(ca_certs=sys.argv[3], certfile=sys.argv[4], keyfile=sys.argv[5])
c.connect("127.0.0.1", int(sys.argv[1]))
c.loop_forever()
print(count, flush=True)
"""


def start_consumer(
    port: int, receipts: bool = False, tls: list[str] | None = None
) -> subprocess.Popen[str]:
    """A QoS 0 subscriber to everything the agent publishes, in its own process
    (with ``receipts``, also sending the receipts a gateway would; ``tls``: its
    CA, certificate and key files)."""
    deadline = time.monotonic() + 20
    while True:
        proc = subprocess.Popen(
            [sys.executable, "-c", _CONSUMER, str(port), "1" if receipts else "0", *(tls or [])],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        if proc.stdout.readline().strip() == "ready":
            return proc
        proc.wait()  # the broker was not listening yet
        if time.monotonic() > deadline:
            raise RuntimeError("the consumer could not subscribe")
        time.sleep(0.2)


def stop_consumer(proc: subprocess.Popen[str]) -> int:
    """Messages the consumer received."""
    proc.terminate()
    out, _ = proc.communicate(timeout=20)
    return int(out.split()[-1])


class GcStats:
    """Counts the cyclic garbage collector's runs and their CPU time (a ``gc.callbacks`` hook)."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.cpu_s = 0.0
        self._t0 = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.thread_time()
        else:
            self.count[info["generation"]] += 1
            self.cpu_s += time.thread_time() - self._t0


def thread_cpu() -> dict[str, float]:
    """CPU seconds per Python thread (its own CPU clock: ns resolution), grouped by name."""
    out: dict[str, float] = {}
    for t in threading.enumerate():
        if t.ident is None:
            continue
        try:
            cpu = time.clock_gettime(time.pthread_getcpuclockid(t.ident))
        except OSError:  # the thread has just ended
            continue
        name = "sensor" if t.name.startswith("sensor") else t.name.split(" ")[0]
        out[name] = out.get(name, 0.0) + cpu
    return out


def bench_simulator(steps: int, tmpfs: str | None) -> None:
    from edge_agent.simulate import FleetSimulator, Scenario

    sc = Scenario.load(REPO / "tests" / "fixtures" / "scenarios" / "fleet_load.toml")
    sim = FleetSimulator(sc)
    shm = "/dev/shm" if Path("/dev/shm").is_dir() else None
    out = Path(tempfile.mkdtemp(prefix="tw-sim-", dir=tmpfs or shm))
    try:
        sim.write_step(out, 0)
        t0, c0 = time.monotonic(), time.process_time()
        n = sum(sim.write_step(out, s) for s in range(1, steps + 1))
        wall, cpu = time.monotonic() - t0, time.process_time() - c0
    finally:
        shutil.rmtree(out, ignore_errors=True)
    print(
        f"simulator: probes={sum(len(d.sensor_ids) for d in sim.devices)} steps={steps} "
        f"readings={n} wall_s={wall:.2f} readings_per_s={n / wall:.0f} cpu_s={cpu:.2f} "
        f"dir={out.parent}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("agent")
    a.add_argument("--sensors", type=int, default=8)
    a.add_argument("--seconds", type=float, default=120.0)
    a.add_argument("--interval", type=float, default=1.0)
    a.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL")
    a.add_argument("--no-mqtt", action="store_true", help="outbox only (isolates MQTT cost)")
    a.add_argument("--detector", default=None, help="detector name (default: the config default)")
    a.add_argument("--profile", default=None, help="write cProfile stats of the main loop here")
    a.add_argument(
        "--receipts",
        choices=["off", "on", "both"],
        default="off",
        help="edge receipts (the consumer sends them); both: off then on, and the ratio",
    )
    a.add_argument(
        "--tls",
        choices=["off", "on", "both"],
        default="off",
        help="MQTT over TLS with a client certificate; both: plain then TLS, and the ratio",
    )
    s = sub.add_parser("simulator")
    s.add_argument("--steps", type=int, default=50)
    s.add_argument("--dir", default=None, help="where to write (default: /dev/shm)")
    args = p.parse_args()
    if args.cmd == "agent":
        choices = {"off": [False], "on": [True], "both": [False, True]}
        runs = [(r, t) for r in choices[args.receipts] for t in choices[args.tls]]
        cost = [
            bench_agent(
                args.sensors,
                args.seconds,
                args.interval,
                args.synchronous,
                not args.no_mqtt,
                args.detector,
                args.profile,
                receipts,
                tls,
            )
            for receipts, tls in runs
        ]
        if len(cost) == 2:
            what = "receipts" if args.receipts == "both" else "tls"
            print(
                f"{what}: cpu_us_per_reading off={cost[0]:.0f} on={cost[1]:.0f} "
                f"ratio_on_off={cost[1] / cost[0]:.2f}"
            )
    else:
        bench_simulator(args.steps, args.dir)


if __name__ == "__main__":
    main()
