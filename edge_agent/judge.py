"""Judge one sample: detector verdict, alert transitions, local alarm state (pure, no I/O).

:class:`SampleJudge` is what the agent decides about every sample before it
stores anything: the detector's verdict (``ok`` readings only: a CRC error, an
85 °C reset or an unplugged probe is not a temperature) and the alert
transitions that verdict, the quality and the thresholds cause. The agent's
:class:`~edge_agent.pipeline.ReadingPipeline` stores and publishes them; the
detection benchmark (``benchmarks/detection``) feeds it simulated weeks, so
what the benchmark measures is exactly what a Pi decides.

Time is the sample's ``ts_ms``: the detector judges by it (a learning period
and excursions in seconds, at any sampling interval) and so do the hard
limits of ``[detector] profile``, which must be exceeded for the profile's
delay (longer while the detector recognises a learned defrost, is still
learning or sees a step too fast for air) before their alert is raised.

>>> from edge_agent.config import loads_config
>>> from edge_agent.sensors import Sample
>>> from telemetry_contract import Quality
>>> judge = SampleJudge(loads_config("[alarm]\\nhigh_c = 8.0", env={}))
>>> _, ts = judge.judge(Sample("28-a", 0, 9.0, Quality.OK))
>>> [(t.kind.value, t.state.value) for t in ts], judge.alarm_active
([('threshold', 'raised')], True)
>>> cold = SampleJudge(loads_config('[detector]\\nprofile = "cold_room"', env={}))
>>> [len(cold.judge(Sample("28-a", m * 60_000, 9.0, Quality.OK))[1]) for m in (0, 89, 90)]
[0, 0, 1]
"""

from __future__ import annotations

from edge_agent.alerts import AlertTracker, Transition
from edge_agent.config import EdgeConfig
from edge_agent.detect import Detector, Verdict
from edge_agent.profiles import PROFILES, Profile
from edge_agent.sensors import Sample

__all__ = ["SampleJudge"]


class SampleJudge:
    """The detector and the alert tracker of one device, fed one sample at a time."""

    def __init__(self, config: EdgeConfig) -> None:
        self._config = config
        d = config.detector
        self.detector = Detector(d.name, d.params, d.profile)
        self.tracker = AlertTracker(clear_after=config.alarm.clear_after)
        self._limits(config)

    def _limits(self, config: EdgeConfig) -> None:
        """The hard limits in force: ``[alarm]`` overrides the profile's."""
        a = config.alarm
        self.profile: Profile = PROFILES[config.detector.profile]  # validated with the config
        self.high_c = a.high_c if a.high_c is not None else self.profile.high_c
        self.low_c = a.low_c if a.low_c is not None else self.profile.low_c
        self.tracker.fault_after = a.fault_after
        self.tracker.fault_after_s = a.fault_after_s

    def reconfigure(self, new: EdgeConfig) -> None:
        """Use a new configuration (remote config): thresholds now, a new detector warms up.

        A new ``target_false_alarms_per_week`` only moves ``thermal``'s margins:
        what it learned stays; so does a saved state the start discarded, if the
        new configuration is the one that made it.
        """
        d, o = new.detector, self._config.detector
        # The retained remote config, after a start that discarded the state it made
        # (the local config differs): what was learned under it goes on.
        resumed = self.detector.resume(d.name, d.params, d.profile)
        if resumed is not None:
            self.detector = resumed
        elif (d.name, d.params, d.profile) != (o.name, o.params, o.profile):
            if self.detector.retunes_to(d.name, d.params, d.profile):
                self.detector.retune(d.params)
            else:
                self.detector = Detector(d.name, d.params, d.profile)
        self._config = new
        self.tracker.clear_after = new.alarm.clear_after
        self._limits(new)

    @property
    def alarm_active(self) -> bool:
        """Whether the local alarm (LED, buzzer, relay) should be on."""
        return self.tracker.alarm_active

    def judge(self, s: Sample) -> tuple[Verdict | None, list[Transition]]:
        """The detector's verdict on ``s`` (None if it is not a temperature) and its transitions."""
        verdict = None
        if s.ok and s.temp_c is not None:
            # Only an ok reading is a temperature: CRC errors, 85 °C resets and
            # unplugged probes never reach the model or the alarm.
            verdict = self.detector.observe(s.sensor_id, s.temp_c, s.ts_ms)
        else:  # the agent runs: a long silence of the model is no power cut
            self.detector.missed(s.sensor_id, s.ts_ms)
        p = self.profile
        transitions = self.tracker.update(
            s.sensor_id,
            s.quality,
            s.temp_c,
            verdict.is_anomaly if verdict else False,
            high_c=self.high_c,
            low_c=self.low_c,
            ts_ms=s.ts_ms,
            # A learned recurring excursion (a defrost) may exceed a limit for longer; so
            # may any while the detector is still learning (it cannot tell a defrost yet)
            # or sees a step too fast for air (a probe pulled out, or a room warming fast).
            delay_s=p.defrost_delay_s
            if verdict and (verdict.recognised or not verdict.warm or verdict.fault)
            else p.delay_s,
            fault=verdict.fault if verdict else "",
        )
        return verdict, transitions
