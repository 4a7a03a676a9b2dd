"""The store's step table is built a key set at a time; it must equal mapping every row on its own."""

from __future__ import annotations

import math
import random

import pyarrow as pa
import pytest

from rftfm_agent.telemetry import vocabulary
from rftfm_agent.telemetry.schema import RawStep
from rftfm_agent.telemetry.store import STEP_SCHEMA, step_table

# Keys that clash on one canonical name (reward, kl, learning rate), unknown keys and traj/ aggregates.
KEYS = [
    "reward",
    "train/reward",
    "rewards/mean",
    "kl",
    "objective/kl",
    "loss",
    "entropy",
    "lr",
    "learning_rate",
    "grad_norm",
    "completion_length",
    "foo/bar",
    "traj/count",
]


def _row_by_row(run_id: str, steps: list[RawStep]) -> pa.Table:
    cols: dict[str, list] = {name: [] for name in STEP_SCHEMA.names}
    for raw in steps:
        for metric, source_key, value in vocabulary.map_row(raw.values):
            for name, v in zip(
                STEP_SCHEMA.names, (run_id, raw.step, raw.wall_time, metric, source_key, value), strict=True
            ):
                cols[name].append(v)
    return pa.table(cols, schema=STEP_SCHEMA)


# The same without clashes: the step table then flattens the rows' values in order (its fast path).
KEYS_WITHOUT_CLASHES = ["reward", "kl", "loss", "entropy", "lr", "grad_norm", "foo/bar", "traj/count"]


@pytest.mark.parametrize("keys", [KEYS, KEYS_WITHOUT_CLASHES], ids=["clashes", "no-clashes"])
def test_step_table_equals_mapping_row_by_row(keys: list[str]) -> None:
    rng = random.Random(0)
    for _ in range(300):
        steps = [
            RawStep(
                step=rng.choice([s, s, 3]),  # repeated steps: order decides which value a reader keeps
                values={
                    k: rng.choice([rng.random(), math.nan, math.inf, -math.inf, 2, True])
                    for k in rng.sample(keys, rng.randint(0, len(keys)))
                },
                wall_time=rng.choice([None, 1.5, 2.0]),
            )
            for s in range(rng.randint(0, 12))
        ]
        mine, reference = step_table("r", steps).to_pydict(), _row_by_row("r", steps).to_pydict()
        for name in STEP_SCHEMA.names:
            assert len(mine[name]) == len(reference[name])
            for x, y in zip(mine[name], reference[name], strict=True):
                assert x == y or (math.isnan(x) and math.isnan(y)), (name, x, y)


def test_wide_steps_equal_pandas_pivot() -> None:
    """`wide_steps` is pandas' pivot (last non-NaN value per step and metric, latest wall time, all-NaN
    metrics and steps kept), built with arrays, and flags the cells logged only as NaN."""
    import numpy as np
    import pandas as pd

    from rftfm_agent.telemetry.store import LOGGED_NAN, wide_steps

    rng = np.random.default_rng(1)
    for _ in range(200):
        n = int(rng.integers(1, 60))
        long = pd.DataFrame(
            {
                "run_id": "r",
                "step": rng.integers(0, 8, n).astype("int64"),
                "wall_time": np.where(rng.random(n) < 0.3, np.nan, rng.random(n)),
                "metric": rng.choice(["reward", "kl", "traj/count", "b", "A", "é"], n),
                "source_key": "k",
                "value": np.where(rng.random(n) < 0.3, np.nan, rng.normal(size=n)),
            }
        )
        pivot = long.pivot_table(index="step", columns="metric", values="value", aggfunc="last", dropna=False)
        pivot.insert(0, "wall_time", long.groupby("step")["wall_time"].max())
        pivot = pivot.reset_index()
        pivot.columns.name = None
        wide = wide_steps(long)
        flags = [c for c in wide.columns if c.startswith(LOGGED_NAN)]
        pd.testing.assert_frame_equal(wide.drop(columns=flags), pivot)
        # A cell logged, and only as NaN, is flagged: NaN alone is also a metric the step did not log.
        only_nan = long.groupby(["step", "metric"])["value"].agg(lambda v: bool(v.isna().all())).unstack()
        expected = {LOGGED_NAN + m for m in only_nan.columns if only_nan[m].fillna(False).astype(bool).any()}
        assert set(flags) == expected
        for flag in flags:
            cells = only_nan[flag.removeprefix(LOGGED_NAN)].fillna(False).astype(bool)
            assert wide.set_index("step")[flag].eq(cells.astype(float)).all()
