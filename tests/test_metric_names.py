"""Every metric name detection and diagnosis read is one the telemetry vocabulary defines (a step metric)
or computes (a `traj/` aggregate): a typo or a renamed metric would otherwise silently watch nothing."""

from __future__ import annotations

from rftfm_agent.detect import features, rules
from rftfm_agent.detect.band import SelfReference
from rftfm_agent.diagnose import fingerprint
from rftfm_agent.telemetry.aggregates import AGGREGATE_NAMES
from rftfm_agent.telemetry.vocabulary import METRIC_NAMES

KNOWN = METRIC_NAMES | set(AGGREGATE_NAMES)


def test_watched_and_fingerprinted_metrics_are_in_the_vocabulary() -> None:
    used = {
        *features.WATCHED,
        *features.LOG_METRICS,
        *fingerprint.LEVEL_METRICS,
        *fingerprint.SELF_MIN_CHANGE,
        *SelfReference.UPWARD_BAD,
        *SelfReference.DOWNWARD_BAD,
        *SelfReference.SKIP,
        *SelfReference.MIN_CHANGE,
        "traj/reward_mean",  # fingerprint.missing_metrics: does the run have trajectories
    }
    assert used - KNOWN == set()


def test_rules_read_vocabulary_metrics() -> None:
    """The hard rules' metrics, found by reading what `HardRules.update` looks up in a row."""
    import inspect
    import re

    looked_up = set(re.findall(r'row\.get\("([^"]+)"\)', inspect.getsource(rules.HardRules.update)))
    assert looked_up, "the rules read no metric?"
    assert looked_up - KNOWN == set()
