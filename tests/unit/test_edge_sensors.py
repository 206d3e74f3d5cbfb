"""Sensor readers against fake w1 sysfs trees (tests/fixtures/w1)."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest

from edge_agent.errors import NoSensorError
from edge_agent.sensor_pool import SensorPool
from edge_agent.sensors import DS18B20, HostSensor, Sample, discover_w1
from telemetry_contract import Quality

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "w1"
PROBE = "28-0316a2791aff"


def tree(tmp_path: Path, name: str) -> Path:
    dst = tmp_path / name
    shutil.copytree(FIXTURES / name, dst)
    return dst


def wait_for(cond, timeout=10.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return False


def test_discovery_finds_only_ds18b20_directories(tmp_path: Path) -> None:
    root = tree(tmp_path, "ok")
    assert discover_w1(root) == ["28-0316a2791aff", "28-0416b3a1c2ff"]
    assert discover_w1(tmp_path / "missing") == []


@pytest.mark.parametrize(
    ("name", "quality", "temp"),
    [
        ("ok", Quality.OK, 23.125),
        ("crc_error", Quality.CRC_ERROR, None),
        ("power_on_reset", Quality.POWER_ON_RESET, None),
        ("out_of_range", Quality.OUT_OF_RANGE, None),
        ("all_zero", Quality.CRC_ERROR, None),
        ("garbled", Quality.DISCONNECTED, None),
    ],
)
def test_quality_flags_after_retries(
    tmp_path: Path, name: str, quality: Quality, temp: float | None
) -> None:
    probe = DS18B20(tree(tmp_path, name) / PROBE, retries=2, retry_delay_s=0)
    s = probe.read()
    assert (s.quality, s.temp_c) == (quality, temp)
    # A good read needs one attempt; a bad one is retried twice before it is reported.
    assert s.attempts == (1 if quality is Quality.OK else 3)


def test_negative_temperature(tmp_path: Path) -> None:
    s = DS18B20(tree(tmp_path, "ok") / "28-0416b3a1c2ff").read()
    assert (s.quality, s.temp_c) == (Quality.OK, -18.5)


def test_retry_recovers_from_transient_crc_error(tmp_path: Path) -> None:
    root = tree(tmp_path, "crc_error")
    good = (FIXTURES / "ok" / PROBE / "w1_slave").read_text()
    probe = DS18B20(root / PROBE, retries=2, retry_delay_s=0.2)

    def fix() -> None:
        time.sleep(0.05)
        (root / PROBE / "w1_slave").write_text(good)

    t = threading.Thread(target=fix)
    t.start()
    s = probe.read()
    t.join()
    assert (s.quality, s.temp_c, s.attempts) == (Quality.OK, 23.125, 2)


def test_85_is_believed_only_when_coming_from_near_85(tmp_path: Path) -> None:
    root = tree(tmp_path, "power_on_reset")
    probe = DS18B20(root / PROBE, retries=0)
    assert probe.read().quality is Quality.POWER_ON_RESET
    probe.last_ok_c = 84.5  # an oven really heating through 84.5 -> 85
    assert probe.read().temp_c == 85.0


def test_host_sensor_reads_thermal_zone(tmp_path: Path) -> None:
    root = tree(tmp_path, "host")
    s = HostSensor(root / "thermal_zone0" / "temp").read()
    assert (s.sensor_id, s.quality, s.temp_c) == ("host", Quality.OK, 48.312)
    assert HostSensor(root / "nope").read().quality is Quality.DISCONNECTED


def test_no_sensor_error_says_where_and_how(tmp_path: Path) -> None:
    root = tree(tmp_path, "empty")
    pool = SensorPool(w1_root=root, host_file=tmp_path / "no-thermal", on_sample=lambda s: None)
    with pytest.raises(NoSensorError) as err:
        pool.start()
    pool.close()
    text = str(err.value)
    assert f"{root}/28-*/w1_slave" in text
    assert str(tmp_path / "no-thermal") in text
    assert "raspi-config" in text and "dtoverlay=w1-gpio" in text


class Collector:
    def __init__(self) -> None:
        self.samples: list[Sample] = []
        self.lock = threading.Lock()

    def __call__(self, s: Sample) -> None:
        with self.lock:
            self.samples.append(s)

    def take(self) -> list[Sample]:
        with self.lock:
            out, self.samples = self.samples, []
        return sorted(out, key=lambda s: s.sensor_id)


def test_pool_reads_all_and_handles_hot_plug(tmp_path: Path) -> None:
    root = tree(tmp_path, "ok")
    got = Collector()
    pool = SensorPool(w1_root=root, host_file=None, on_sample=got)
    try:
        assert pool.start() == ["28-0316a2791aff", "28-0416b3a1c2ff"]
        pool.round()
        assert wait_for(lambda: len(got.samples) == 2)
        assert [s.quality for s in got.take()] == [Quality.OK, Quality.OK]

        # Unplug one probe: it is reported disconnected, the other keeps reading.
        shutil.rmtree(root / "28-0416b3a1c2ff")
        pool.round()
        assert wait_for(lambda: len(got.samples) == 2)
        first, second = got.take()
        assert (first.sensor_id, first.quality) == (PROBE, Quality.OK)
        assert (second.sensor_id, second.quality) == ("28-0416b3a1c2ff", Quality.DISCONNECTED)

        # Plug a new probe in: picked up on the next round.
        new = root / "28-0000000000aa"
        new.mkdir()
        (new / "w1_slave").write_text((FIXTURES / "ok" / PROBE / "w1_slave").read_text())
        pool.round()
        assert wait_for(lambda: len(got.samples) == 3)
        ids = {s.sensor_id: s.quality for s in got.take()}
        assert ids["28-0000000000aa"] is Quality.OK
    finally:
        pool.close()


class HungSensor:
    """A probe whose read blocks until released (a stuck 1-Wire bus)."""

    def __init__(self) -> None:
        self.release = threading.Event()

    @property
    def sensor_id(self) -> str:
        return "28-00000000dead"

    def present(self) -> bool:
        return True

    def read(self) -> Sample:
        self.release.wait(30)
        return Sample(self.sensor_id, 0, 5.0, Quality.OK)


def test_hung_sensor_never_stalls_the_others(tmp_path: Path) -> None:
    root = tree(tmp_path, "ok")
    got = Collector()
    pool = SensorPool(w1_root=root, host_file=None, on_sample=got, read_timeout_s=0.3)
    hung = HungSensor()
    try:
        pool.start()
        pool.add(hung)  # the port's fake
        t0 = time.monotonic()
        pool.round()  # must not block on the hung read
        assert time.monotonic() - t0 < 0.25
        assert wait_for(lambda: len(got.samples) == 2)
        assert {s.sensor_id for s in got.take()} == {PROBE, "28-0416b3a1c2ff"}
        time.sleep(0.35)
        pool.round()  # the hung read is now older than read_timeout_s
        assert wait_for(lambda: len(got.samples) == 3)
        hung_reports = [s for s in got.take() if s.sensor_id == hung.sensor_id]
        assert hung_reports[0].quality is Quality.DISCONNECTED
        assert "hung" in hung_reports[0].detail
    finally:
        hung.release.set()
        pool.close()


def test_fast_reads_share_one_thread_and_a_hung_one_gets_the_others_spread(
    tmp_path: Path,
) -> None:
    root = tree(tmp_path, "ok")
    got = Collector()
    pool = SensorPool(
        w1_root=root, host_file=None, on_sample=got, read_timeout_s=5.0, spread_after_s=0.02
    )
    hung = HungSensor()
    try:
        pool.start()
        pool.round()  # nothing known yet: every read on its own thread
        assert wait_for(lambda: len(got.samples) == 2)
        got.take()
        pool.round()  # the last round was fast: one thread reads both, one after the other
        assert wait_for(lambda: len(got.samples) == 2)
        assert {s.sensor_id for s in got.take()} == {PROBE, "28-0416b3a1c2ff"}
        assert pool.spread_deadline() is None and pool.spread() == 0
        pool.add(hung)  # sorts first: blocks the single reader
        pool.round()
        due = pool.spread_deadline()
        assert due is not None and due - time.monotonic() <= 0.02
        time.sleep(0.1)
        assert got.samples == []  # queued behind the hung read until the owner spreads them
        assert pool.spread() == 2
        assert wait_for(lambda: len(got.samples) == 2)
        assert {s.sensor_id for s in got.take()} == {PROBE, "28-0416b3a1c2ff"}
        pool.round()  # after a slow round: wide again, the hung probe is still busy
        assert pool.spread_deadline() is None
        assert wait_for(lambda: len(got.samples) == 2)
    finally:
        hung.release.set()
        pool.close()
