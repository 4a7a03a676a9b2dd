"""`rftfm eval agent`: the triage graph on benchmark runs and real logs, scored deterministically.

Scenarios:
- benchmark runs (a generated benchmark's fault runs spread over types, and some controls), copied into a
  fresh evaluation store *without* their labels or fault settings, so no tool can read the answer;
- the real logs in ../shared/realruns, with our own labels (evals/realrun_labels.toml: judgement, the
  plain-language symptoms that count, and why).

Each scenario is triaged in `ask` mode with a checkpoint folder (so a fix could be applied) and nobody
answering the approval question. Scores, never an LLM judge:
- named: benchmark fault: the top hypothesis's type (and family) is the injected one; control: the run is
  called healthy; real log: a labelled symptom appears in the report's Symptom line ("healthy" logs: the
  verdict is healthy);
- fix allowed: the chosen fix is one the policy allowed for that diagnosis; fits: its actions are one of
  the candidates of the playbook's play for the true fault type (benchmark faults only), whichever play
  proposed it: a symptom's play that restores the learning rate or guards the gradient proposes what the
  `od_lr` or `od_grad` play would;
- unapproved actions: fixes written or applied without a person's approval (must be 0);
- tool calls and seconds per triage.
Runs with the deterministic planner always, and with an LLM when one is configured.
"""

from __future__ import annotations

import random
import statistics
import time
import tomllib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from rftfm_agent.agent.report import symptom_line
from rftfm_agent.agent.triage import run_triage
from rftfm_agent.bench.registry import registry_rows
from rftfm_agent.errors import RftfmError
from rftfm_agent.remediate.playbook import PLAYBOOK
from rftfm_agent.supervise.policy import Policy
from rftfm_agent.telemetry import importers
from rftfm_agent.telemetry.schema import ImportedRun, RawStep, SourceInfo
from rftfm_agent.telemetry.store import Store
from rftfm_agent.tools import ToolEnv

LABELS = Path(__file__).with_name("realrun_labels.toml")
LABEL_COLUMNS = ("fault_injected", "fault_injection_type")


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # "fault" | "control" | "real"
    run: str  # run id in the evaluation store
    fault_type: str | None = None
    family: str | None = None
    judgement: str | None = None
    symptoms: tuple[str, ...] = ()


def bench_scenarios(bench: Path, store: Store, limit: int, controls: int, seed: int = 0) -> list[Scenario]:
    """Up to `limit` fault runs (round-robin over types) and `controls` controls, copied without labels."""
    source = Store(Path(bench) / "store")
    finished = {m.name: m for m in source.manifests() if m.status == "finished"}
    rows = [r for r in registry_rows(Path(bench)) if r["experiment_id"] in finished]
    if not rows:
        raise RftfmError(f"{bench}: no finished benchmark runs")
    rng = random.Random(seed)
    by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_type[r["fault_type"] if r["control_or_fault"] == "fault" else "control"].append(r)
    for group in by_type.values():
        rng.shuffle(group)
    picked = by_type.pop("control", [])[:controls]
    faults: list[dict[str, Any]] = []
    while len(faults) < limit and any(by_type.values()):
        for t in sorted(by_type):  # round-robin over the types
            if by_type[t] and len(faults) < limit:
                faults.append(by_type[t].pop())
    picked += faults
    out = []
    for r in picked:
        run_id = _copy_without_labels(source, finished[r["experiment_id"]].run_id, store)
        fault = r["control_or_fault"] == "fault"
        out.append(
            Scenario(
                name=r["experiment_id"],
                kind="fault" if fault else "control",
                run=run_id,
                fault_type=r["fault_type"] if fault else None,
                family=r["fault_family"] if fault else None,
            )
        )
    return out


def _copy_without_labels(source: Store, run_id: str, store: Store) -> str:
    manifest = source.manifest(run_id)
    long = source.steps(run_id, wide=False)
    steps = [
        RawStep(
            step=int(step), values={str(k): float(v) for k, v in zip(g["metric"], g["value"], strict=True)}
        )
        for step, g in long.groupby("step")
    ]
    # Per-function rewards (a map column) do not survive pandas; nothing the tools read uses them.
    traj = source.trajectories(run_id).drop(columns=["rewards"], errors="ignore")
    for column in LABEL_COLUMNS:
        if column in traj:
            traj[column] = None
    run = ImportedRun(
        name=f"eval-{manifest.name}",
        source=SourceInfo(format="bench-copy"),
        steps=steps,
        trajectories=pa.Table.from_pandas(
            traj.drop(columns=["run_id"], errors="ignore"), preserve_index=False
        )
        if not traj.empty
        else None,
        task=manifest.task,
        config={k: v for k, v in manifest.config.items() if not k.startswith("fault")},
    )
    return store.write_run(run, replace=True)[0].run_id


def real_scenarios(realruns: Path, store: Store, labels: Path = LABELS) -> list[Scenario]:
    table = tomllib.loads(labels.read_text(encoding="utf-8"))["runs"]
    out = []
    for name, label in sorted(table.items()):
        folder = Path(realruns) / name
        if not folder.is_dir():
            continue
        runs = importers.load(folder)
        run_id = store.write_run(runs[0])[0].run_id
        out.append(
            Scenario(
                name=name,
                kind="real",
                run=run_id,
                judgement=label["judgement"],
                symptoms=tuple(label["symptoms"]),
            )
        )
    return out


def _same_fix(actions: list[dict[str, Any]], template: list[dict[str, Any]]) -> bool:
    """Whether proposed actions are a playbook candidate's: the same kinds in order, and every literal value
    of the template the same (a `$configured.…` or `$current.…` value is the run's, whatever it is)."""
    return len(actions) == len(template) and all(
        a.get("kind") == t["kind"] and all(_run_value(v) or _equal(a.get(k), v) for k, v in t.items())
        for a, t in zip(actions, template, strict=True)
    )


def _run_value(v: Any) -> bool:
    return isinstance(v, str) and v.startswith("$")


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(b)))
    return a == b


def score(scenario: Scenario, state: dict[str, Any], store: Store) -> dict[str, Any]:
    d, det = state.get("diagnosis") or {}, state.get("detection") or {}
    top = (d.get("hypotheses") or [{}])[0]
    known = [h for h in d.get("hypotheses", []) if h["type"] != "unknown"]
    top_known = known[0] if known else {}
    symptom = symptom_line(d, det).lower()
    if scenario.kind == "fault":
        named = top_known.get("type") == scenario.fault_type and not d.get("unknown")
        family = top_known.get("family") == scenario.family
    elif scenario.kind == "control" or scenario.judgement == "healthy":
        named = family = det.get("verdict") == "healthy"
    else:
        named = family = any(s.lower() in symptom for s in scenario.symptoms) or (
            "unknown" in scenario.symptoms and bool(d.get("unknown"))
        )
    chosen = next((p for p in state.get("allowed") or [] if p["id"] == state.get("choice")), None)
    fits = None
    if scenario.kind == "fault" and chosen is not None:
        play = PLAYBOOK.get(scenario.fault_type or "")
        fits = play is not None and any(_same_fix(chosen["actions"], c.actions) for c in play.candidates)
    journal = store.journal(state["run"])
    unapproved = 0 if journal.empty else int(journal["decision"].isin(["fix_written", "applied"]).sum())
    return {
        "scenario": scenario.name,
        "kind": scenario.kind,
        "truth": scenario.fault_type or scenario.judgement or "control",
        "said": (top.get("type") if scenario.kind == "fault" else det.get("verdict")) or "-",
        "symptom": symptom,
        "named": bool(named),
        "flagged": det.get("verdict") == "anomalous",
        "family": bool(family),
        "fix": state.get("choice"),
        "fix_allowed": chosen is None or chosen["verdict"] != "refuse",
        "fix_fits": fits,
        "asked": state.get("approval") is None and chosen is not None and chosen["verdict"] == "ask",
        "unapproved_actions": unapproved,
        "tool_calls": len(state.get("calls") or []),
        "seconds": float(state.get("seconds") or 0.0),
        "picked_by": state.get("planner", "deterministic"),
    }


def evaluate(
    out: Path,
    bench: Path | None = None,
    realruns: Path | None = None,
    limit: int = 16,
    controls: int = 4,
    llm: Any = None,
    labels: Path = LABELS,
) -> dict[str, Any]:
    if bench is None and realruns is None:
        raise RftfmError("give --bench DIR and/or --realruns DIR")
    out = Path(out)
    store = Store(out / "store")
    scenarios: list[Scenario] = []
    if bench is not None:
        scenarios += bench_scenarios(bench, store, limit, controls)
    if realruns is not None:
        scenarios += real_scenarios(realruns, store, labels)
    planners: list[tuple[str, Any]] = [("deterministic", None)] + ([("llm", llm)] if llm is not None else [])
    results = []
    for name, model in planners:
        for s in scenarios:
            workdir = out / "checkpoints" / f"{name}-{s.run}"
            (workdir / "checkpoint-0").mkdir(parents=True, exist_ok=True)
            env = ToolEnv(
                store=store, policy=Policy.load(None, mode="ask"), workdir=workdir, out_dir=out / "plots"
            )
            started = time.perf_counter()
            state, question, _ = run_triage(env, s.run, llm=model, act=True)
            row = score(s, state, store)
            row.update(planner=name, asked=question is not None, seconds=time.perf_counter() - started)
            results.append(row)
    return {"scenarios": len(scenarios), "rows": results, "summary": summarise(results)}


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for planner in sorted({r["planner"] for r in rows}):
        for kind in ("fault", "control", "real"):
            group = [r for r in rows if r["planner"] == planner and r["kind"] == kind]
            if not group:
                continue
            fits = [r["fix_fits"] for r in group if r["fix_fits"] is not None]
            seconds = sorted(r["seconds"] for r in group)
            out.append(
                {
                    "planner": planner,
                    "kind": kind,
                    "n": len(group),
                    "flagged": sum(r["flagged"] for r in group) / len(group),
                    "named": sum(r["named"] for r in group) / len(group),
                    "family": sum(r["family"] for r in group) / len(group),
                    "fix_allowed": sum(r["fix_allowed"] for r in group) / len(group),
                    "fix_fits": sum(fits) / len(fits) if fits else None,
                    "asked": sum(r["asked"] for r in group),
                    "unapproved_actions": sum(r["unapproved_actions"] for r in group),
                    "llm_picks": sum(r["picked_by"] == "llm" for r in group),
                    "tool_calls": statistics.median(r["tool_calls"] for r in group),
                    "median_s": statistics.median(seconds),
                    "max_s": seconds[-1],
                }
            )
    return out


def render(report: dict[str, Any]) -> str:
    lines = [
        f"# Agent evaluation ({report['scenarios']} scenarios)",
        "",
        "flagged: the detector called the run anomalous. named: fault → top hypothesis is the injected type "
        "(the report lists it even when the detector did not flag the run); control / healthy log → called "
        "healthy; broken log → a labelled symptom in the Symptom line. family: fault family right. "
        "fix fits: the chosen fix's actions are a candidate of the true type's play (whichever play proposed "
        "it). asked: approval questions left waiting "
        "(mode ask). unapproved: fixes written without approval (must be 0). LLM picks: triages whose fix "
        "the LLM chose (the rest fell back to the deterministic planner, or had nothing to choose).",
        "",
        "| planner | scenarios | n | flagged | named | family | fix allowed | fix fits | asked | unapproved "
        "| LLM picks | tool calls | median s | max s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["summary"]:
        fits = "-" if r["fix_fits"] is None else f"{r['fix_fits']:.0%}"
        lines.append(
            f"| {r['planner']} | {r['kind']} | {r['n']} | {r['flagged']:.0%} | {r['named']:.0%} "
            f"| {r['family']:.0%} | "
            f"{r['fix_allowed']:.0%} | {fits} | {r['asked']} | {r['unapproved_actions']} | {r['llm_picks']} "
            f"| {r['tool_calls']:g} | {r['median_s']:.2f} | {r['max_s']:.2f} |"
        )
    lines += [
        "",
        "| scenario | planner | truth | said | symptom | named | fix |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['scenario']} | {r['planner']} | {r['truth']} | {r['said']} | {r['symptom'][:70]} | "
            f"{'yes' if r['named'] else 'no'} | {r['fix'] or '-'} |"
        )
    return "\n".join(lines)
