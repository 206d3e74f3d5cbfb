"""Edge agent benchmarks (not tests): CPU per reading, peak RSS, simulator capacity.

    python benchmarks/edge/bench_edge.py agent --sensors 8 --seconds 120
    python benchmarks/edge/bench_edge.py agent --sensors 8 --seconds 120 --detector context
    python benchmarks/edge/bench_edge.py simulator --steps 50

``agent`` runs the real agent in this process (fake w1 tree written by a
separate simulator process, mock GPIO pins, outbox with synchronous=FULL,
QoS 1 to a private Mosquitto) and reports process CPU time (all threads:
sensor reads, parsing, detection, outbox, paho) divided by readings stored,
plus peak RSS. ``simulator`` measures how many w1_slave files per second one
simulator process writes for a 400-probe fleet.
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
) -> None:
    from gpiozero.pins.mock import MockFactory

    from edge_agent.app import EdgeAgent
    from edge_agent.config import loads_config

    work = Path(tempfile.mkdtemp(prefix="tw-bench-"))
    port = free_port()
    conf = work / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nuser root\n"
        f"persistence false\nlog_dest none\n"
    )
    broker = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)])
    # The gateway's part, in its own process (its CPU is not the agent's): without a
    # subscriber the broker answers PUBACK 16 and the agent keeps re-sending.
    consumer = start_consumer(port) if mqtt else None
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
[mqtt]
port = {port}
"""
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


_CONSUMER = """
import signal, sys
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

count = 0

def on_message(client, userdata, msg):
    global count
    count += 1

c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
c.on_message = on_message
c.on_connect = lambda c, u, f, rc, p: c.subscribe("thermowatch/#", qos=0)
c.on_subscribe = lambda c, u, mid, rcs, p: print("ready", flush=True)
signal.signal(signal.SIGTERM, lambda *a: c.disconnect())
c.connect("127.0.0.1", int(sys.argv[1]))
c.loop_forever()
print(count, flush=True)
"""


def start_consumer(port: int) -> subprocess.Popen[str]:
    """A QoS 0 subscriber to everything the agent publishes, in its own process."""
    deadline = time.monotonic() + 20
    while True:
        proc = subprocess.Popen(
            [sys.executable, "-c", _CONSUMER, str(port)], stdout=subprocess.PIPE, text=True
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
    s = sub.add_parser("simulator")
    s.add_argument("--steps", type=int, default=50)
    s.add_argument("--dir", default=None, help="where to write (default: /dev/shm)")
    args = p.parse_args()
    if args.cmd == "agent":
        bench_agent(
            args.sensors,
            args.seconds,
            args.interval,
            args.synchronous,
            not args.no_mqtt,
            args.detector,
            args.profile,
        )
    else:
        bench_simulator(args.steps, args.dir)


if __name__ == "__main__":
    main()
