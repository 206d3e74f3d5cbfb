"""The scale-out benchmark's pure parts: its options, the stored rate, the ratios, CPU groups."""

from __future__ import annotations

import pytest

from benchmarks.e2e.bench_scaleout import parse_args
from benchmarks.e2e.scaleout import cpu_groups, fits, parse_configs, ratios, stored_rate


def test_defaults_run_every_configuration_with_the_baseline_first_and_last() -> None:
    args = parse_args([])
    assert args.configs == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (1, 1)]
    assert args.rates == [3000.0]
    # The same partitions for every configuration: enough for three processors.
    assert args.partitions == 6
    assert (args.warm_s, args.seconds) == (20.0, 75.0)


def test_options_of_bench_latency_are_accepted_and_one_rate_is_required() -> None:
    args = parse_args(["--configs", "1x1,2x2", "--rates", "7000", "--devices", "60"])
    assert args.configs == [(1, 1), (2, 2)] and args.rates == [7000.0] and args.devices == 60
    with pytest.raises(SystemExit):
        parse_args(["--rates", "1000,2000"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1x2,2x2", "baseline"),
        ("1x1,0x2", "at least 1"),
        ("1x1,3", "GATEWAYSxPROCESSORS"),
        ("1x1,ax2", "GATEWAYSxPROCESSORS"),
    ],
)
def test_bad_configs_are_refused_with_the_option_named(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"--configs: .*{message}"):
        parse_configs(text)


def test_stored_rate_is_the_growth_between_the_first_and_last_count_of_the_window() -> None:
    samples = [(9.0, 0), (10.5, 300), (13.5, -1), (16.5, 2100), (19.5, 3000), (22.0, 3500)]
    # 10.5 -> 19.5 (the failed count is skipped, the ones outside ignored).
    assert stored_rate(samples, 10.0, 20.0) == pytest.approx(2700 / 9.0)
    assert stored_rate(samples[:2], 10.0, 20.0) is None


def test_ratios_compare_each_mean_with_the_mean_of_every_baseline_run() -> None:
    rows = [
        {"config": "1g1p", "stored_per_s": 1000.0},
        {"config": "1g3p", "stored_per_s": 1650.0},
        {"config": "2g1p", "stored_per_s": None},  # its count failed
        {"config": "1g1p", "stored_per_s": 1200.0},
    ]
    r = ratios(rows)
    assert r["1g1p"]["stored_per_s"] == 1100.0 and r["1g1p"]["ratio_to_1g1p"] == 1.0
    assert r["1g3p"]["ratio_to_1g1p"] == 1.5
    assert r["2g1p"] == {"runs": [], "stored_per_s": None, "ratio_to_1g1p": None}


def test_cpu_is_summed_per_kind_of_process() -> None:
    cpu = {"kafka-1": 10.0, "kafka-2": 12.5, "search-1": 30.0, "processor": 20.0}
    assert cpu_groups(cpu) == {"processor": 20.0, "kafka": 22.5, "search": 30.0, "total": 72.5}


def test_a_configuration_past_the_budget_is_skipped_judged_by_the_slowest_so_far() -> None:
    assert fits(1500.0, [240.0, 300.0, 180.0], 1800.0)
    assert not fits(1501.0, [240.0, 300.0, 180.0], 1800.0)
    assert fits(1e6, [300.0], 0.0)  # no budget
