"""The diagnoser: ranked fault hypotheses for a fingerprint, each with the evidence behind it.

Two views of the same fingerprint library:

- a random forest (scikit-learn, class-balanced, NaN-aware) gives each fault type a probability;
- nearest-neighbour retrieval, on features compressed with sign(x)·log(1 + |x|), centred on the healthy
  runs' medians and scaled by the library's interquartile spread, names the labelled runs that looked
  most alike, and says `unknown` when the nearest one is farther than almost every library run is from
  its own nearest neighbour (the 99th percentile), or when a hard rule fired that no library run set off.

Both are fitted on the library rows taken in the query's mode (band or self) and only on the features
the query has: a run that did not log, say, `entropy` is compared with fingerprints stripped of every
entropy feature, rather than with a guess at its entropy; a run whose policy calls no tools (or whose
tool use was not logged) is not offered tool/environment faults. Fitting takes about a second and is
cached per (mode, feature set, tool use). A hypothesis's driving features are those the forest relies
on where the run sits away from healthy runs on the same side as the hypothesised fault's typical run.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rftfm_agent.detect.features import WATCHED
from rftfm_agent.diagnose.fingerprint import FEATURES, Fingerprint, feature_docs, feature_metric
from rftfm_agent.diagnose.forest import ArrayForest
from rftfm_agent.diagnose.hypothesis import (
    Diagnosis,
    DrivingFeature,
    Evidence,
    Hypothesis,
    MetricWindow,
    NearestRun,
)
from rftfm_agent.diagnose.library import HEALTHY, Library
from rftfm_agent.errors import RftfmError

NOVELTY_QUANTILE = 0.99
TOP_FEATURES = 4
TOP_NEIGHBOURS = 3


# Tool/environment faults can only show in a run whose policy calls tools: for any other run (including
# one whose trajectories were not logged, so tool use is unknown) they are left out of the candidates.
TOOL_FAMILIES = frozenset({"TE"})
TOOL_FEATURE = "traj/tool_calls_mean:level"


def uses_tools(tool_calls_mean: float) -> bool:
    return math.isfinite(tool_calls_mean) and tool_calls_mean > 0


def squash(x: np.ndarray) -> np.ndarray:
    """sign(x)·log(1 + |x|): z-scores of 3 and 3,000 should not be a thousand times apart in a distance."""
    return np.sign(x) * np.log1p(np.abs(x))


@dataclass
class _Model:
    features: list[str]
    forest: ArrayForest  # predicts with numpy only: no scikit-learn import after the fit is cached
    embedded: np.ndarray  # library rows in the retrieval space
    center: np.ndarray  # healthy runs' median per feature (squashed)
    scale: np.ndarray  # robust spread per feature (squashed)
    class_median: dict[str, np.ndarray]  # per type, squashed
    novelty_limit: float
    loo_distances: np.ndarray
    rules_seen: set[str]  # rule flags set in at least one library run
    labels: Any  # library rows of this mode (labels only)

    def unseen_rules(self, x: np.ndarray) -> list[str]:
        """Hard rules set in one fingerprint (a row over `features`) that no library run ever set off:
        a failure the library has no example of."""
        return [
            f.removeprefix("rule:")
            for f, v in zip(self.features, x, strict=True)
            if f.startswith("rule:") and v == 1 and f not in self.rules_seen
        ]

    @functools.cached_property
    def label_arrays(self) -> dict[str, np.ndarray]:
        """Library label columns as arrays, for reading many rows without pandas indexing."""
        return {
            c: self.labels[c].astype(str).to_numpy() for c in ("experiment_id", "strength", "task", "type")
        }

    def embed(self, x: np.ndarray) -> np.ndarray:
        z = (squash(x) - self.center) / self.scale
        return np.nan_to_num(z, nan=0.0)  # a missing value counts as healthy-looking


class Diagnoser:
    """Fit lazily from a library; `diagnose(fingerprint)` returns a `Diagnosis`.

    Models are kept per (mode, feature set, tool use) for the diagnoser's lifetime: a long-lived
    supervisor sees few distinct combinations (one per logging setup).
    """

    def __init__(self, library: Library, n_estimators: int = 300, seed: int = 0) -> None:
        self.library = library
        self.n_estimators = n_estimators
        self.seed = seed
        self.docs = feature_docs()
        self._models: dict[tuple[str, tuple[str, ...], bool], _Model] = {}
        self._library_digest: str | None = None
        self.family_of = dict(zip(library.table["type"], library.table["family"], strict=True))
        table = library.table
        self.present = frozenset(table.columns[table.notna().any()])  # features the library has values for

    def model(self, mode: str, features: tuple[str, ...], tools: bool = True) -> _Model:
        key = (mode, features, tools)
        if key not in self._models:
            self._models[key] = self._cached_fit(mode, features, tools)
        return self._models[key]

    def _cached_fit(self, mode: str, features: tuple[str, ...], tools: bool) -> _Model:
        """Fit, or load the same fit from the disk cache: a forest per logging setup takes seconds to fit,
        and every `rftfm diagnose` / triage in a new process would pay it again. Keyed by everything the
        fit depends on (the library's contents, mode, features, tool use, forest size, seed, sklearn)."""
        import hashlib
        import pickle
        from importlib.metadata import version

        from rftfm_agent.resources import cache_root
        from rftfm_agent.telemetry.io import atomic_write_with

        if self._library_digest is None:
            hashed = pd.util.hash_pandas_object(self.library.table, index=False).to_numpy()
            self._library_digest = hashlib.sha1(hashed.tobytes()).hexdigest()
        fitted_by = ("array-forest-1", version("scikit-learn"))  # the cached model's format and its fitter
        spec = repr((self._library_digest, mode, features, tools, self.n_estimators, self.seed, fitted_by))
        path = cache_root() / "diagnoser" / f"{hashlib.sha1(spec.encode()).hexdigest()[:20]}.pkl"
        try:
            with path.open("rb") as fh:
                return pickle.load(fh)  # our own cache folder, written below
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
            pass
        model = self._fit(mode, list(features), tools)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_with(path, lambda tmp: Path(tmp).write_bytes(pickle.dumps(model)))
        except OSError:
            pass  # an unwritable cache only costs time
        return model

    def _fit(self, mode: str, features: list[str], tools: bool) -> _Model:
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.metrics import pairwise_distances

        rows = self.library.rows(mode)
        if not tools:
            rows = rows[~rows["family"].isin(TOOL_FAMILIES)].reset_index(drop=True)
        if rows.empty:
            raise RftfmError(f"the fingerprint library has no fingerprints taken in mode {mode!r}")
        x = rows[features].to_numpy(dtype=float)
        y = rows["type"].to_numpy()
        forest = RandomForestClassifier(
            n_estimators=self.n_estimators, class_weight="balanced", random_state=self.seed, n_jobs=-1
        ).fit(x, y)
        sx = squash(x)
        healthy = sx[y == HEALTHY] if (y == HEALTHY).any() else sx
        with warnings.catch_warnings():  # all-NaN columns (a metric no library run logged) are expected
            warnings.simplefilter("ignore", RuntimeWarning)
            center = np.nan_to_num(np.nanmedian(healthy, axis=0), nan=0.0)
            q75, q25 = np.nanpercentile(sx, [75, 25], axis=0)
            scale = np.nan_to_num((q75 - q25) / 1.349, nan=1.0)
        scale = np.maximum(scale, 0.1)
        embedded = np.nan_to_num((sx - center) / scale, nan=0.0)
        pairwise = pairwise_distances(embedded)
        np.fill_diagonal(pairwise, np.inf)
        loo = pairwise.min(axis=1)  # each library run's distance to its nearest other run
        limit = float(np.sort(loo)[min(len(loo) - 1, math.ceil((len(loo) + 1) * NOVELTY_QUANTILE) - 1)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            class_median = {t: np.nanmedian(sx[y == t], axis=0) for t in np.unique(y)}
        return _Model(
            features, ArrayForest.of(forest), embedded, center, scale, class_median, limit, np.sort(loo),
            {f for f in features if f.startswith("rule:") and (rows[f] == 1).any()},
            rows[["experiment_id", "type", "strength", "task"]],
        )  # fmt: skip

    def usable_features(self, fp: Fingerprint) -> tuple[str, ...]:
        """Features whose metric the run logged and that the library has values for."""
        missing = set(fp.missing)
        return tuple(f for f in FEATURES if feature_metric(f) not in missing and f in self.present)

    def predict_table(self, mode: str, table: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For an evaluation: (classes, probabilities per row, unknown flag per row) for fingerprint rows
        taken in `mode` that log every metric (as benchmark runs do)."""
        from sklearn.metrics import pairwise_distances

        features = tuple(f for f in FEATURES if f in self.present)
        classes = np.array(sorted(set(self.library.rows(mode)["type"])))
        proba = np.zeros((len(table), len(classes)))
        unknown = np.zeros(len(table), dtype=bool)
        tools = np.array([uses_tools(v) for v in table[TOOL_FEATURE].to_numpy(dtype=float)], dtype=bool)
        for flag in (True, False):
            rows = np.flatnonzero(tools == flag)
            if rows.size == 0:
                continue
            model = self.model(mode, features, flag)
            x = table[list(features)].to_numpy(dtype=float)[rows]
            nearest = pairwise_distances(model.embed(x), model.embedded).min(axis=1)
            unseen = np.array([bool(model.unseen_rules(row)) for row in x])
            unknown[rows] = (nearest > model.novelty_limit) | unseen
            columns = np.searchsorted(classes, model.forest.classes_)
            proba[np.ix_(rows, columns)] = model.forest.predict_proba(x)
        return classes, proba, unknown

    def diagnose_many(self, fps: list[Fingerprint], top: int = 3) -> list[Diagnosis]:
        """`diagnose` for many runs, with one forest call per model instead of one per run (a forest
        call costs tens of milliseconds whatever its number of rows)."""
        probas: dict[int, np.ndarray] = {}
        by_model: dict[tuple[str, tuple[str, ...], bool], list[int]] = {}
        for i, fp in enumerate(fps):
            if (key := self._model_key(fp)) is not None:
                by_model.setdefault(key, []).append(i)
        for (mode, features, tools), rows in by_model.items():
            model = self.model(mode, features, tools)
            x = np.vstack([fps[i].vector(features) for i in rows])
            for i, row in zip(rows, model.forest.predict_proba(x), strict=True):
                probas[i] = row
        return [self.diagnose(fp, top, proba=probas.get(i)) for i, fp in enumerate(fps)]

    def _model_key(self, fp: Fingerprint) -> tuple[str, tuple[str, ...], bool] | None:
        """The model a fingerprint is ranked by (mode, usable features, tool use); None when no watched
        metric was logged with a finite value (nothing to rank)."""
        if all(m in fp.missing for m in WATCHED):
            return None
        return fp.mode, self.usable_features(fp), uses_tools(fp.values.get(TOOL_FEATURE, math.nan))

    def diagnose(self, fp: Fingerprint, top: int = 3, proba: np.ndarray | None = None) -> Diagnosis:
        key = self._model_key(fp)
        if key is None:
            # Nothing to fingerprint (e.g. a pasted step whose metrics are all NaN): no fault type can be
            # ranked, which is an answer ("unknown"), not an error; the findings still say what is wrong.
            why = "none of the metrics a fault fingerprint needs were logged with a finite value"
            return Diagnosis(
                run=fp.run,
                anchor_step=fp.anchor_step,
                mode=fp.mode,
                unknown=True,
                hypotheses=[
                    Hypothesis(family="unknown", type="unknown", probability=1.0, evidence=Evidence(why=why))
                ],
                missing=fp.missing,
                notes=[why],
            )
        model = self.model(*key)
        x = fp.vector(key[1])[None, :]
        if proba is None:
            proba = model.forest.predict_proba(x)[0]
        classes = model.forest.classes_
        embedded = model.embed(x)
        distances = np.linalg.norm(model.embedded - embedded, axis=1)
        index = np.argsort(distances)
        distances = distances[index]
        nearest_distance = float(distances[0])
        far = nearest_distance > model.novelty_limit
        unseen = model.unseen_rules(x[0])
        unknown = far or bool(unseen)
        hypotheses = []
        if unknown:
            why = []
            if far:
                why.append(
                    "farther from every labelled fingerprint than 99% of library runs are from their nearest "
                    "neighbour"
                )
            if unseen:
                why.append(f"hard rule(s) {', '.join(unseen)} fired, which no labelled run ever set off")
            share = float(np.searchsorted(model.loo_distances, nearest_distance) / len(model.loo_distances))
            hypotheses.append(
                Hypothesis(
                    family="unknown",
                    type="unknown",
                    probability=1.0 if unseen else share,
                    evidence=Evidence(
                        why="; ".join(why) + "; the known types below are ranked as if it were one",
                        nearest_distance=nearest_distance,
                        limit=model.novelty_limit,
                        unseen_rules=unseen,
                    ),
                )
            )
        for i in np.argsort(-proba)[:top]:
            if proba[i] <= 0:
                break
            kind = str(classes[i])
            hypotheses.append(
                Hypothesis(
                    family=self.family_of.get(kind, ""),
                    type=kind,
                    probability=float(proba[i]),
                    evidence=self._evidence(model, fp, x[0], kind, distances, index),
                )
            )
        return Diagnosis(
            run=fp.run,
            anchor_step=fp.anchor_step,
            mode=fp.mode,
            unknown=unknown,
            hypotheses=hypotheses,
            missing=fp.missing,
            novelty={"nearest_distance": nearest_distance, "limit": model.novelty_limit},
        )

    def _evidence(
        self,
        model: _Model,
        fp: Fingerprint,
        x: np.ndarray,
        kind: str,
        distances: np.ndarray,
        index: np.ndarray,
    ) -> Evidence:
        labels = model.label_arrays
        mine = labels["type"][index] == kind
        nearest = [
            NearestRun(
                run=labels["experiment_id"][j],
                strength=labels["strength"][j],
                task=labels["task"][j],
                distance=round(float(d), 3),
            )
            for d, j in zip(distances[mine][:TOP_NEIGHBOURS], index[mine][:TOP_NEIGHBOURS], strict=True)
        ]
        sx = squash(x)
        run_dev = (sx - model.center) / model.scale
        kind_dev = (model.class_median[kind] - model.center) / model.scale
        with np.errstate(invalid="ignore"):
            agree = np.where(
                np.sign(run_dev) == np.sign(kind_dev), np.minimum(np.abs(run_dev), np.abs(kind_dev)), 0.0
            )
        weight = np.nan_to_num(model.forest.importances * agree, nan=0.0)
        driving: list[DrivingFeature] = []
        for j in np.argsort(-weight)[:TOP_FEATURES]:
            if weight[j] <= 0:
                break
            name = model.features[j]
            driving.append(
                DrivingFeature(
                    feature=name,
                    value=_round(x[j]),
                    healthy=_round(_unsquash(model.center[j])),
                    typical=_round(_unsquash(model.class_median[kind][j])),
                    meaning=self.docs[name],
                )
            )
        metrics: list[MetricWindow] = []
        for item in driving:
            metric = feature_metric(item.feature)
            if metric in fp.windows and metric not in {m.metric for m in metrics}:
                window = {k: _round(v) for k, v in fp.windows[metric].items()}
                metrics.append(MetricWindow(metric=metric, **window))
        why = _why(kind, driving, nearest)
        return Evidence(why=why, features=driving, metrics=metrics, nearest_runs=nearest)


def _why(kind: str, driving: list[DrivingFeature], nearest: list[NearestRun]) -> str:
    """One readable line: the strongest deviations shared with the type, and the closest labelled run."""
    if not driving:
        return f"{kind}: no single feature stands out; ranked by the forest on the whole fingerprint"
    parts = [
        f"{f.feature} = {_fmt(f.value)} (healthy {_fmt(f.healthy)}, typical of {kind} {_fmt(f.typical)})"
        for f in driving[:2]
    ]
    line = f"{kind}: " + "; ".join(parts)
    if nearest:
        line += f"; nearest labelled run {nearest[0].run}"
    return line


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3g}"


def _unsquash(v: float) -> float:
    return float(np.sign(v) * np.expm1(abs(v))) if math.isfinite(v) else math.nan


def _round(v: float) -> float | None:
    return float(f"{v:.4g}") if math.isfinite(v) else None
