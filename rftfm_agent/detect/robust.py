"""Robust z-scores: the one yardstick every detector and the fingerprint measure deviations with.

A value's robust z is its distance from a reference median in units of the reference's robust spread,
1.4826 × MAD (the median absolute deviation, scaled so that it estimates the standard deviation of normal
data: Rousseeuw & Croux, "Alternatives to the median absolute deviation", JASA 1993). Median and MAD are
not dragged by the outliers they are meant to find, unlike a mean and a standard deviation.

Spreads get floors (a metric that healthy runs log as a near-constant would otherwise turn noise into
huge z), and z is clipped (past a point, "how far" carries no more information and would swamp sums).
"""

from __future__ import annotations

import math

import numpy as np

MAD_TO_SIGMA = 1.4826  # 1 / Φ⁻¹(3/4): MAD → σ for normal data (Rousseeuw & Croux 1993)
MIN_SCALE = 1e-6  # the smallest spread ever divided by
Z_CLIP = 1e4  # |z| is clipped here

# Self references (a run's own past): the spread is at least 2 % of the level and half the plain standard
# deviation, so that a run that was nearly constant does not make its first wiggle an incident.
SELF_RELATIVE_FLOOR = 0.02
SELF_STD_FLOOR = 0.5


def robust_location_scale(values: np.ndarray) -> tuple[float, float]:
    """(median, 1.4826 × MAD) of the finite values; (NaN, NaN) when there are none."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return math.nan, math.nan
    median = float(np.median(values))
    return median, MAD_TO_SIGMA * float(np.median(np.abs(values - median)))


def self_location_scale(reference: np.ndarray, min_change: float = 0.0) -> tuple[float, float]:
    """Median and floored robust spread of a run's own reference values (finite values only).

    `min_change` is the metric's smallest change worth an alarm whatever the run's noise (e.g. a KL
    moving by less than 0.01).
    """
    reference = reference[np.isfinite(reference)]
    center, scale = robust_location_scale(reference)
    floor = max(
        MIN_SCALE,
        SELF_RELATIVE_FLOOR * abs(center),
        SELF_STD_FLOOR * float(np.std(reference)),
        min_change,
    )
    return center, max(scale, floor)


def robust_z(
    values: np.ndarray | float, center: np.ndarray | float, scale: np.ndarray | float, clip: float = Z_CLIP
) -> np.ndarray | float:
    """(values − center) / scale, clipped to ±`clip` (NaN stays NaN)."""
    if isinstance(values, float) and isinstance(center, float) and isinstance(scale, float) and scale != 0:
        z = (values - center) / scale  # one step of an online detector: no numpy call (~10× cheaper)
        return z if z != z else max(-clip, min(clip, z))
    with np.errstate(invalid="ignore"):
        return np.clip((values - center) / scale, -clip, clip)
