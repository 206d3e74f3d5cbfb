"""MQTT adapter pieces that need no broker: jittered backoff, bounded in-flight window."""

from __future__ import annotations

import queue
import random
import shutil
from pathlib import Path
from typing import Any

from gpiozero.pins.mock import MockFactory

from edge_agent.app import EdgeAgent
from edge_agent.config import MqttSection, loads_config
from edge_agent.mqtt import Acked, MqttLink
from edge_agent.sensors import Sample
from telemetry_contract import Quality

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "w1"


class FakeClient:
    def __init__(self) -> None:
        self.delays: list[tuple[int, int]] = []

    def reconnect_delay_set(self, lo: int, hi: int) -> None:
        self.delays.append((lo, hi))


def test_reconnect_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    link = MqttLink(
        MqttSection(reconnect_min_s=1.0, reconnect_max_s=30.0),
        client_id="c",
        password="",
        status_topic="s",
        config_topic="c",
        will_payload=b"",
        events=queue.Queue(),
        rng=random.Random(7),
    )
    fake = FakeClient()
    for _ in range(12):
        link._backoff(fake)  # type: ignore[arg-type]
    delays = [lo for lo, hi in fake.delays]
    assert all(lo == hi for lo, hi in fake.delays)
    assert all(1 <= d <= 30 for d in delays)
    assert delays[0] <= 2  # first attempts stay short
    assert len(set(delays[5:])) > 1  # jitter: not the same wait for every device
    assert max(delays) > 5  # grows


class FakeLink:
    """Stands in for MqttLink: records publishes, acknowledges on demand."""

    connected = True

    def __init__(self) -> None:
        self.sent: list[tuple[int, bytes]] = []
        self.mid = 0

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> int:
        self.mid += 1
        self.sent.append((self.mid, payload))
        return self.mid

    def set_online_payload(self, payload: bytes) -> None:
        pass

    def stop(self, *a: Any, **k: Any) -> None:
        pass


def test_in_flight_window_is_bounded_and_puback_deletes(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "ok", tmp_path / "w1")
    cfg = loads_config(
        f'[device]\nstate_dir = "{tmp_path / "s"}"\n[sensors]\nw1_root = "{tmp_path / "w1"}"\n'
        '[gpio]\npin_factory = "mock"\n[mqtt]\nmax_inflight = 4\n'
    )
    agent = EdgeAgent(cfg, pin_factory=MockFactory())
    agent.start(mqtt=False)
    link = FakeLink()
    agent.link = link  # type: ignore[assignment]
    try:
        for i in range(10):
            agent.handle_samples(
                [Sample("28-0316a2791aff", 1_767_225_600_000 + i, 4.0, Quality.OK)]
            )
        assert agent.pump() == 4 and agent.pump() == 0  # window full
        assert len(link.sent) == 4
        for mid, _ in link.sent[:2]:
            agent.events.put(Acked(mid, True, "Success"))
        agent.process_events(0.1)
        assert agent.pump() == 2 and len(link.sent) == 6
        assert agent.outbox.stats().depth == 8  # 2 acknowledged rows deleted
    finally:
        agent.link = None
        agent.shutdown()
