"""Contract decode + validate throughput on one core, in messages/s.

Decodes distinct, realistic reading payloads through the same entry point the
gateway uses (``decode(payload, topic=..., now_ms=...)``: size limit, strict
typed decode, range checks, future-timestamp check, topic/device/site check),
and reports the best of several rounds of CPU time (``time.process_time``).

Run pinned to one core::

    taskset -c 0 python benchmarks/contract/bench_decode.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from pathlib import Path

import msgspec

from telemetry_contract import Reading, TopicKind, decode, encode, mqtt_topic

NOW_MS = 1_767_225_600_000


def payloads(n: int, seed: int = 1) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        device = f"s{i % 3 + 1}-d{i % 10 + 1:02d}"
        site = device.split("-")[0]
        r = Reading(
            device_id=device,
            sensor_id=f"28-{rng.getrandbits(48):012x}",
            site=site,
            seq=i,
            ts=NOW_MS - rng.randint(0, 86_400_000),
            temp_c=round(rng.uniform(-30, 40), 4),
            anomaly_score=rng.random(),
            is_anomaly=False,
            detector="hst",
        )
        out.append((mqtt_topic(site, device, TopicKind.TELEMETRY), encode(r)))
    return out


def run(n: int, rounds: int) -> dict[str, float]:
    data = payloads(n)
    best_full = best_bare = float("inf")
    bare = msgspec.json.Decoder(Reading)
    for _ in range(rounds):
        t0 = time.process_time()
        for topic, raw in data:
            decode(raw, topic=topic, now_ms=NOW_MS)
        best_full = min(best_full, time.process_time() - t0)
        t0 = time.process_time()
        for _topic, raw in data:
            bare.decode(raw)
        best_bare = min(best_bare, time.process_time() - t0)
    return {
        "messages": n,
        "rounds": rounds,
        "payload_bytes_mean": sum(len(r) for _, r in data) / n,
        "decode_validate_per_s": n / best_full,
        "us_per_message": best_full / n * 1e6,
        "bare_msgspec_decode_per_s": n / best_bare,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = run(args.n, args.rounds)
    result["python"] = platform.python_version()
    result["msgspec"] = msgspec.__version__
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
