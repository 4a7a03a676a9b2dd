"""Read-only analysis tools: detect, diagnose, compare fingerprints (nearest labelled runs), plot.

All four read one `Analysis` of the run (verdict, diagnosis, symptoms), computed once per run and store
state: a triage calls them in turn and pays for the detector and the fingerprint once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from rftfm_agent.detect.detector import RunData
from rftfm_agent.detect.events import RunVerdict
from rftfm_agent.detect.features import run_frame
from rftfm_agent.detect.rules import RULES
from rftfm_agent.diagnose.api import explain
from rftfm_agent.diagnose.fingerprint import fingerprint
from rftfm_agent.diagnose.hypothesis import Diagnosis
from rftfm_agent.errors import RftfmError
from rftfm_agent.remediate.symptoms import Symptom, symptoms
from rftfm_agent.telemetry.store import Store
from rftfm_agent.tools.base import RunInput, ToolEnv, models

# Plain words for each symptom (remediate/symptoms.py), as the report and the LLM name them.
SYMPTOM_WORDS: dict[str, str] = {
    "no_signal_too_easy": "no learning signal: most groups get identical rewards, nearly all solved",
    "no_signal_too_hard": "no learning signal: most groups get identical rewards, nearly all failed",
    "entropy_collapse_kl_explosion": "entropy collapse with KL explosion: the sampler stopped exploring",
    "gradient_spikes": "gradient spikes: the gradient norm jumps tens of times its usual level, again and "
    "again",
    "reward_inconsistent": "inconsistent reward: the same completion was paid differently within a group",
    "reward_hacking": "reward hacking suspected: the reward rose while completions collapsed or the held-out "
    "score did not follow",
}


@dataclass(frozen=True)
class Analysis:
    run_id: str
    verdict: RunVerdict
    diagnosis: Diagnosis
    symptoms: tuple[Symptom, ...]
    last_step: int
    rows_after_anchor: int


def analyse(env: ToolEnv, run: str) -> Analysis:
    """The run's analysis, from the cache while the run, the store and the models are unchanged."""
    run_id = env.store.resolve(run)
    m = env.store.manifest(run_id)
    key = (str(env.store.root), run_id, m.n_steps, m.last_step, env.detector_path, env.library_path)
    if key not in _CACHE:
        if len(_CACHE) >= CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = _analyse(env, run_id)
    return _CACHE[key]


CACHE_SIZE = 64
_CACHE: dict[tuple[Any, ...], Analysis] = {}


_NO_SIGNAL = ("no_signal_too_easy", "no_signal_too_hard")


def _analyse(env: ToolEnv, run_id: str) -> Analysis:
    store: Store = env.store
    detector, diagnoser = models(env)
    manifest = store.manifest(run_id)
    frame = run_frame(store, run_id)
    if frame.empty:
        raise RftfmError(f"run {run_id}: no step records to examine")
    verdict = detector.score_run(RunData(run_id, manifest.task, frame, config=dict(manifest.config)))
    band = detector.bands.get(manifest.task) if manifest.task else None
    diagnosis = explain(diagnoser.diagnose(fingerprint(run_id, frame, verdict, band), top=3), verdict, frame)
    rows = store.steps(run_id).to_dict("records")
    found = list(symptoms(rows, band))
    # A critical finding whose play is a symptom's (e.g. no learning signal over the whole run, which the
    # newest rows alone may not show) is a symptom too: the planner falls back on its play.
    for f in diagnosis.findings:
        name = (f.play or "").removeprefix("symptom:")
        if f.severity == "critical" and f.play and f.play.startswith("symptom:") and name not in found:
            found.append(name)  # type: ignore[arg-type]
    if "length_at_cap" in found:  # cut completions earn nothing: all-equal groups follow from the cap
        found = ["length_at_cap", *(n for n in found if n not in ("length_at_cap", *_NO_SIGNAL))]
    if "reward_hacking" in found:  # groups "all solved" by a shortcut: not data too easy to filter
        found = ["reward_hacking", *(n for n in found if n not in ("reward_hacking", "no_signal_too_easy"))]
    if any(e.check == "reward_collapse" for e in verdict.events):  # the reward stopped paying: not hard data
        found = [n for n in found if n != "no_signal_too_hard"]
    after = sum(1 for r in rows if int(r["step"]) > diagnosis.anchor_step)
    return Analysis(run_id, verdict, diagnosis, tuple(found), int(frame["step"].max()), after)


class DetectOutput(BaseModel):
    run_id: str
    verdict: str
    mode: str
    first_alarm_step: int | None
    alarms: list[dict[str, Any]] = Field(
        description="step, metric, check, severity, score, and for a hard rule what it means (first 12)"
    )
    missing: list[str]


def detect(params: RunInput, env: ToolEnv) -> DetectOutput:
    """Run the anomaly detector on a stored run: healthy or anomalous, from which step, which alarms."""
    v = analyse(env, params.run).verdict
    alarms = [
        {
            "step": e.step,
            "metric": e.metric,
            "check": e.kind,
            "severity": e.severity,
            "score": e.score,
            "meaning": RULES[e.check].description if e.source == "rule" and e.check in RULES else "",
        }
        for e in v.alarms
    ][:12]
    return DetectOutput(
        run_id=v.run,
        verdict=v.verdict,
        mode=v.mode,
        first_alarm_step=v.first_alarm_step,
        alarms=alarms,
        missing=v.missing,
    )


class DiagnoseOutput(BaseModel):
    run_id: str
    anchor_step: int
    unknown: bool
    hypotheses: list[dict[str, Any]] = Field(description="family, type, probability, why")
    symptoms: list[str] = Field(description="plain-language symptoms read from the run's newest rows")
    symptom: str = Field(description="the problem in one plain line")
    findings: list[dict[str, Any]] = Field(
        description="plain-language problems: symptom, severity, confidence, evidence, causes, checks, play"
    )
    notes: list[str]


def diagnose(params: RunInput, env: ToolEnv) -> DiagnoseOutput:
    """Diagnose a stored run: ranked fault hypotheses with the evidence behind each, and its symptoms."""
    a = analyse(env, params.run)
    d = a.diagnosis
    return DiagnoseOutput(
        run_id=a.run_id,
        anchor_step=d.anchor_step,
        unknown=d.unknown,
        hypotheses=[
            {
                "family": h.family,
                "type": h.type,
                "probability": round(h.probability, 3),
                "why": h.evidence.why,
            }
            for h in d.hypotheses
        ],
        symptoms=[SYMPTOM_WORDS.get(s, s) for s in a.symptoms],
        symptom=d.symptom,
        findings=[f.model_dump(exclude={"rules"}) for f in d.findings],
        notes=d.notes,
    )


class NearestOutput(BaseModel):
    run_id: str
    neighbours: list[dict[str, Any]] = Field(description="labelled library runs near this fingerprint")


def nearest_runs(params: RunInput, env: ToolEnv) -> NearestOutput:
    """Compare the run's fault fingerprint with the labelled library: the nearest runs of each hypothesis."""
    d = analyse(env, params.run).diagnosis
    out = [
        {
            "type": h.type,
            "run": n.run,
            "strength": n.strength,
            "task": n.task,
            "distance": round(n.distance, 3),
        }
        for h in d.hypotheses
        for n in h.evidence.nearest_runs
    ]
    return NearestOutput(run_id=d.run, neighbours=sorted(out, key=lambda r: r["distance"])[:10])


class PlotInput(RunInput):
    metrics: list[str] = Field(
        default_factory=lambda: ["reward", "kl", "entropy", "completion_length", "grad_norm", "loss"],
        description="canonical metric names to plot",
    )


class PlotOutput(BaseModel):
    run_id: str
    path: str = Field(description="PNG file")


def plot_metrics(params: PlotInput, env: ToolEnv) -> PlotOutput:
    """Plot metrics of a run against step into a PNG (the path is returned); NaN/Inf steps are marked."""
    from rftfm_agent.telemetry.plots import plot_run  # matplotlib: only when a plot is asked for

    run_id = env.store.resolve(params.run)
    out_dir = env.out_dir or env.store.root / "reports"
    path = plot_run(env.store.steps(run_id), params.metrics, run_id, out_dir / f"{run_id}-metrics.png")
    return PlotOutput(run_id=run_id, path=str(path))
