"""The gateway's own message path with receipts on vs off, in one process, no broker.

Not a test. :class:`gateway.app.Gateway` runs on a source and a sink that do
nothing (the sink confirms each batch of 500 at once, as Kafka confirms a
batch), so what is measured is the gateway's code alone: bridge, window,
acks, and with receipts on the per-device book and the receipts it sends
(4 devices, ``receipts.interval_s`` 0.2 s). Rounds alternate off/on; the
ratio is the median of the on rounds' messages per CPU second over the off
rounds'. A steadier figure than the process benchmark on a shared machine,
and a bound for it: the real gateway adds MQTT and Kafka I/O that receipts
do not change.

    python benchmarks/gateway/receipts_core.py --messages 100000 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from benchmarks.gateway.workload import payload  # noqa: E402
from gateway.app import Gateway  # noqa: E402
from gateway.config import (  # noqa: E402
    GatewayConfig,
    GatewaySettings,
    HttpSettings,
    ReceiptSettings,
)
from gateway.ports import Incoming  # noqa: E402

BATCH = 500
DEVICES = 4


class NullSource:
    connected = True
    paused = False
    fatal = None
    session_present = None

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.on_message: Any = None
        self.receipt_bytes = 0

    def start(self, on_message: Any, on_connected: Any) -> None:
        self.on_message = on_message
        on_connected(1)
        self.started.set()

    async def stop(self, *, end_session: bool = False) -> None:
        pass

    def ack(self, message: Incoming) -> None:
        pass

    def publish(self, topic: str, body: bytes) -> bool:
        self.receipt_bytes += len(body)
        return True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    async def wait_connected(self, wait_s: float) -> bool:
        return True

    async def unsubscribe(self) -> bool:
        return True


class BatchSink:
    healthy = True
    broken = None

    def __init__(self) -> None:
        self.pending: list[Any] = []
        self.on_written: Any = None

    async def start(self, on_written: Any) -> None:
        self.on_written = on_written

    async def stop(self) -> None:
        pass

    def submit(self, record: Any, token: Any) -> None:
        self.pending.append(token)

    def confirm_all(self) -> None:
        pending, self.pending = self.pending, []
        for token in pending:
            self.on_written(token)


async def one_round(enabled: bool, messages: list[Incoming]) -> float:
    """Messages per CPU second through the gateway."""
    cfg = GatewayConfig(
        gateway=GatewaySettings(id="bench", shutdown_grace_s=0),
        receipts=ReceiptSettings(enabled=enabled),
        http=HttpSettings(enabled=False),
    )
    source, sink = NullSource(), BatchSink()
    gw = Gateway(cfg, source=source, sink=sink)
    task = asyncio.create_task(gw.run())
    await source.started.wait()
    started = time.process_time()
    for i in range(0, len(messages), BATCH):
        for message in messages[i : i + BATCH]:
            source.on_message(message)
        sink.confirm_all()
        await asyncio.sleep(0)  # the loop's other work (the receipt timer) gets its turn
    elapsed = time.process_time() - started
    gw.stop()
    await task
    return len(messages) / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5, help="off/on pairs (order alternates)")
    args = ap.parse_args()
    ts = int(time.time() * 1000)
    messages = [
        Incoming(
            f"thermowatch/s1/bench-{i % DEVICES}/telemetry",
            payload(f"bench-{i % DEVICES}", "s1", i // DEVICES, ts),
            i % 65535 + 1,
            1,
            1,
            (),
        )
        for i in range(args.messages)
    ]
    rates: dict[str, list[float]] = {"off": [], "on": []}
    for r in range(args.rounds):
        for mode in ("off", "on") if r % 2 == 0 else ("on", "off"):
            rates[mode].append(round(asyncio.run(one_round(mode == "on", messages))))
    off, on = statistics.median(rates["off"]), statistics.median(rates["on"])
    print(
        json.dumps(
            {
                "messages": args.messages,
                "per_cpu_s_off": rates["off"],
                "per_cpu_s_on": rates["on"],
                "us_per_msg_off": round(1e6 / off, 2),
                "us_per_msg_on": round(1e6 / on, 2),
                "ratio_on_to_off": round(on / off, 3),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
