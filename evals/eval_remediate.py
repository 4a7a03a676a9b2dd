"""`rftfm eval remediate`: does the closed loop recover what a fault took, with the fault still present?

    rftfm eval remediate --bench BENCH --out OUT [--workers 2] [--limit N] [--markdown F --png F]

Data: a generated benchmark (registry + store). A fault run is *hurt* when its end held-out accuracy keeps
less than 90 % of its matched control's gain (control's last − control's first held-out accuracy; the
fault run starts from the same model). Each hurt run's spec (its fault included) is trained again under a
supervisor in `auto` mode, once per arm:

- `playbook`: rftfm (detector → diagnosis → playbook → policy → fix → verify), a fallback reward registered;
- `oracle`: the same with the true fault type in place of the diagnosis (a wrong diagnosis vs a wrong fix);
- `halve_lr`: the generic fix: at the first critical alarm, roll back and halve the learning rate;
- `random`: a random action among every playbook action the run allows, at the first critical alarm;
- `stop`: stop at the first critical alarm (the model as it was then);
- `nothing`: the benchmark's own fault run (no rerun: same spec, same records).

Every healthy control is also run under the `playbook` arm: any intervention there is harm, and so is
accuracy lost against the control itself.

Scored per run: recovered (end held-out accuracy keeps ≥ 90 % of the control's gain), the paper's weaker
criterion (a fix was verified: after it the detector stayed quiet for the verification window and the
alarmed metrics came back into the healthy band), steps trained beyond the run's length (wasted), seconds
against the control's, escalations, undone fixes. Runs go through the benchmark generator's process pool
(or Ray), and results are appended to OUT/remediation.jsonl as they finish, so an interrupted evaluation
resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from rftfm_agent.bench.generator import exclusive_lock, run_in_pool, run_on_ray
from rftfm_agent.bench.registry import registry_rows
from rftfm_agent.errors import RftfmError
from rftfm_agent.telemetry.store import Store

ARMS = ("playbook", "oracle", "halve_lr", "random", "stop")
RECOVERED = 0.9  # share of the control's held-out gain a run must keep (DESIGN.md §6, §9)
RESULTS = "remediation.jsonl"


# ---------------------------------------------------------------------------- the worker (a child process)
def run_arm(spec_json: str, arm: str, true_type: str, out: str, cache: str | None) -> dict[str, Any]:
    """Train one spec under the supervisor with `arm`'s planner; returns what the report needs."""
    if cache:
        os.environ["RFTFM_CACHE"] = cache
    import shutil

    import torch

    from rftfm_agent.evals.closed_loop import oracle_planner, supervised_testbed_run
    from rftfm_agent.remediate.planner import make_plan
    from rftfm_agent.supervise.policy import Policy
    from rftfm_agent.testbed.runner import RunSpec

    torch.set_num_threads(1)
    spec = RunSpec.model_validate_json(spec_json)
    spec = spec.model_copy(update={"name": f"{spec.name}-{arm}"})
    planner = {
        "playbook": make_plan,
        "oracle": oracle_planner(true_type) if true_type else make_plan,
        "halve_lr": _halve_lr,
        "random": _random_planner(spec.name),
        "stop": _stop_planner,
    }[arm]
    policy = Policy.load(mode="auto", allow_reward_changes=True, allow_data_changes=True)
    store = Store(Path(out) / "store")
    workdir = Path(out) / "work" / spec.name
    started = time.perf_counter()
    try:
        outcome = supervised_testbed_run(spec, store, workdir, policy, planner=planner, fallback=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    journal = store.journal(outcome.result.run_id)
    decisions = journal["decision"].tolist() if not journal.empty else []
    return {
        "experiment_id": spec.name.rsplit("-", 1)[0],
        "name": spec.name,
        "arm": arm,
        "final_heldout": outcome.final_heldout,
        "final_step": outcome.final_step,
        "steps": spec.steps,
        "steps_trained": outcome.steps_trained,
        "seconds": round(time.perf_counter() - started, 3),
        "supervisor_seconds": round(outcome.result.supervisor_seconds, 4),
        "applied": decisions.count("applied"),
        "verified": decisions.count("verified"),
        "undone": decisions.count("undone"),
        "escalated": decisions.count("escalated"),
        "refused": decisions.count("refused"),
        "incidents": decisions.count("incident"),
        "stopped": outcome.result.stop.kind if outcome.result.stop else None,
        "errors": outcome.result.errors,
        "fixes": [
            json.loads(a)
            for a, d in zip(journal.get("actions", []), decisions, strict=False)
            if d == "applied"
        ],
    }


def _first_alarm_plan(actions: list[Any], why: str) -> Any:
    from rftfm_agent.remediate.planner import Candidate, Plan

    return Plan(
        decision="fix",
        reason=why,
        candidates=[Candidate(id=f"baseline:{why}", actions=actions, why=why, reference="baseline")],
    )


def _halve_lr(diagnosis: Any, context: Any) -> Any:
    from rftfm_agent.remediate.actions import SetLearningRate
    from rftfm_agent.remediate.planner import Plan

    if "baseline:roll back and halve the learning rate" in context.exclude:
        return Plan(decision="escalate", reason="the generic fix did not hold")
    lr = float(context.current.get("learning_rate") or context.configured.get("learning_rate") or 1e-4)
    return _first_alarm_plan([SetLearningRate(value=lr * 0.5)], "roll back and halve the learning rate")


def _random_planner(seed: str) -> Any:
    rng = random.Random(f"random-arm-{seed}")

    def plan(diagnosis: Any, context: Any) -> Any:
        from rftfm_agent.remediate.planner import Plan, candidates_for
        from rftfm_agent.remediate.playbook import PLAYS

        pool = [c for p in PLAYS for c in candidates_for(p, context) if not c.escalates]
        pool = [c for c in pool if f"baseline:{c.id}" not in context.exclude]
        if not pool or context.exclude:
            return Plan(decision="escalate", reason="the random fix did not hold")
        choice = rng.choice(pool)
        return _first_alarm_plan(choice.actions, choice.id)

    return plan


def _stop_planner(diagnosis: Any, context: Any) -> Any:
    from rftfm_agent.remediate.planner import Plan

    return Plan(decision="escalate", reason="baseline: stop at the first critical alarm")


# ---------------------------------------------------------------------------- selecting and running
def _heldout(store: Store, run_id: str) -> list[float]:
    frame = store.steps(run_id)
    if "heldout/accuracy" not in frame.columns:
        return []
    return [float(x) for x in frame["heldout/accuracy"].dropna()]


def select(bench: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(hurt fault runs, healthy controls), each with its spec and its control's held-out numbers."""
    from rftfm_agent.bench.presets import plan

    bench = Path(bench)
    plan_file = bench / "plan.json"
    if not plan_file.is_file():
        raise RftfmError(f"{bench}: no plan.json (not a generated benchmark)")
    meta = json.loads(plan_file.read_text())
    specs = {p.experiment_id: p for p in plan(meta["preset"], int(meta["seed"]))}
    rows = registry_rows(bench)
    store = Store(bench / "store")
    by_name = {m.name: m.run_id for m in store.manifests() if m.status == "finished"}
    seconds = {}
    log = bench / "generation.jsonl"
    if log.is_file():
        for line in log.read_text().splitlines():
            info = json.loads(line)
            seconds[info["experiment_id"]] = info["seconds"]
    controls = {r["cell"]: r for r in rows if r["control_or_fault"] == "control"}
    hurt, healthy = [], []
    for r in rows:
        eid = r["experiment_id"]
        control = controls.get(r["cell"])
        if eid not in by_name or control is None or control["experiment_id"] not in by_name:
            continue
        ctrl = _heldout(store, by_name[control["experiment_id"]])
        own = _heldout(store, by_name[eid])
        if len(ctrl) < 2 or not own:
            continue
        gain = ctrl[-1] - ctrl[0]
        item = {
            "experiment_id": eid,
            "spec": specs[eid].spec.model_dump_json(),
            "type": r["fault_type"],
            "family": r["fault_family"],
            "strength": r["strength"],
            "onset_style": r["onset_style"],
            "control_first": ctrl[0],
            "control_final": ctrl[-1],
            "control_gain": gain,
            "control_seconds": seconds.get(control["experiment_id"]),
            "nothing_final": own[-1],
            "steps": int(r["steps"]),
        }
        if r["control_or_fault"] == "control":
            healthy.append(item)
        elif gain > 0 and own[-1] - ctrl[0] < RECOVERED * gain:
            hurt.append(item)
    return hurt, healthy


def evaluate(
    bench: Path,
    out: Path,
    *,
    workers: int = 2,
    limit: int | None = None,
    arms: tuple[str, ...] = ARMS,
    ray_address: str | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    bad = [a for a in arms if a not in ARMS]
    if bad:
        raise RftfmError(f"unknown arm {bad[0]!r}; known: {', '.join(ARMS)}")
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    lock = exclusive_lock(out, "evaluate", "rftfm eval remediate")
    hurt, healthy = select(bench)
    if limit is not None:
        hurt, healthy = _spread(hurt, limit), _spread(healthy, max(1, limit // 3))
    done = _load_results(out)
    cache = os.environ.get("RFTFM_CACHE")
    jobs = [(h["spec"], arm, h["type"], str(out), cache) for h in hurt for arm in arms]
    jobs += [(h["spec"], "playbook", "", str(out), cache) for h in healthy]
    todo = [j for j in jobs if (json.loads(j[0])["name"], j[1]) not in done]
    from rftfm_agent.testbed.model import WarmupConfig, warm_model

    warm_model(WarmupConfig())
    failed: list[str] = []
    started = time.perf_counter()
    with (out / RESULTS).open("a") as log:

        def finished(info: dict[str, Any]) -> None:
            log.write(json.dumps(info) + "\n")
            log.flush()
            done[(info["experiment_id"], info["arm"])] = info
            if progress:
                progress(len(done), len(jobs), info)

        if ray_address:
            run_on_ray(ray_address, todo, finished, failed, worker=run_arm)
        else:
            run_in_pool(workers, todo, finished, failed, worker=run_arm)
    report = summarise(hurt, healthy, done, arms)
    report.update(
        bench=str(bench),
        out=str(out),
        failed=failed,
        seconds_this_call=round(time.perf_counter() - started, 1),
        jobs=len(jobs),
    )
    lock.close()
    return report


def _spread(items: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """`n` items spread over fault types (round-robin over types, in registry order)."""
    by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in items:
        by_type[item.get("type") or "control"].append(item)
    out: list[dict[str, Any]] = []
    while len(out) < n and any(by_type.values()):
        for key in sorted(by_type):
            if by_type[key] and len(out) < n:
                out.append(by_type[key].pop(0))
    return out


def _load_results(out: Path) -> dict[tuple[str, str], dict[str, Any]]:
    path = out / RESULTS
    done: dict[tuple[str, str], dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                info = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line: that run is made again
            done[(info["experiment_id"], info["arm"])] = info
    return done


# ---------------------------------------------------------------------------- scoring
def _recovered(final: float | None, item: dict[str, Any]) -> bool:
    return final is not None and final - item["control_first"] >= RECOVERED * item["control_gain"]


def _kept_share(final: float | None, item: dict[str, Any]) -> float:
    if final is None or item["control_gain"] <= 0:
        return math.nan
    return (final - item["control_first"]) / item["control_gain"]


def summarise(
    hurt: list[dict[str, Any]],
    healthy: list[dict[str, Any]],
    done: dict[tuple[str, str], Any],
    arms: tuple[str, ...],
) -> dict[str, Any]:
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in hurt:
        rows["nothing"].append({**item, "final": item["nothing_final"], "recovered": False, "weaker": False})
        for arm in arms:
            r = done.get((item["experiment_id"], arm))
            if r is None:
                continue
            rows[arm].append(
                {
                    **item,
                    "final": r["final_heldout"],
                    "recovered": _recovered(r["final_heldout"], item),
                    "weaker": r["verified"] > 0,
                    "kept_share": _kept_share(r["final_heldout"], item),
                    "wasted_steps": max(0, r["steps_trained"] - min(r["final_step"], item["steps"])),
                    "extra_steps": r["steps_trained"] - item["steps"],
                    "seconds_ratio": r["seconds"] / item["control_seconds"]
                    if item.get("control_seconds")
                    else math.nan,
                    "escalated": r["escalated"] > 0,
                    "undone": r["undone"],
                    "applied": r["applied"],
                    "supervisor_share": r["supervisor_seconds"] / r["seconds"] if r["seconds"] else math.nan,
                    "fixes": r.get("fixes", []),
                }
            )
    for item in rows["nothing"]:
        item["kept_share"] = _kept_share(item["final"], item)
    arms_table = {}
    for arm in ("nothing", *arms):
        rs = rows.get(arm, [])
        if not rs:
            continue
        arms_table[arm] = {
            "runs": len(rs),
            "recovered": _mean([r["recovered"] for r in rs]),
            "weaker": _mean([r["weaker"] for r in rs]) if arm != "nothing" else 0.0,
            "kept_share_median": _median([r["kept_share"] for r in rs]),
            "wasted_steps_mean": _mean([r.get("wasted_steps", 0) for r in rs]),
            "extra_steps_mean": _mean([r.get("extra_steps", 0) for r in rs]),
            "seconds_ratio_median": _median([r.get("seconds_ratio", math.nan) for r in rs]),
            "escalated": _mean([r.get("escalated", False) for r in rs]),
            "undone_mean": _mean([r.get("undone", 0) for r in rs]),
        }
    groups: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    for arm, rs in rows.items():
        by: dict[str, list[bool]] = defaultdict(list)
        for r in rs:
            by[f"{r['family']} {r['strength']} {r['onset_style']}"].append(r["recovered"])
        for key, vals in by.items():
            groups[key][arm] = {"runs": len(vals), "recovered": _mean(vals)}
    by_type: dict[str, dict[str, Any]] = defaultdict(dict)
    for arm, rs in rows.items():
        per: dict[str, list[bool]] = defaultdict(list)
        for r in rs:
            per[r["type"]].append(r["recovered"])
        for key, vals in per.items():
            by_type[key][arm] = {"runs": len(vals), "recovered": _mean(vals)}
    harm_rows = []
    for item in healthy:
        r = done.get((item["experiment_id"], "playbook"))
        if r is None:
            continue
        harm_rows.append(
            {
                "experiment_id": item["experiment_id"],
                "intervened": r["applied"] > 0,
                "stopped": r["stopped"],
                "lost": item["control_final"]
                - (r["final_heldout"] if r["final_heldout"] is not None else 0.0),
                "supervisor_share": r["supervisor_seconds"] / r["seconds"] if r["seconds"] else math.nan,
                "seconds_ratio": r["seconds"] / item["control_seconds"]
                if item.get("control_seconds")
                else math.nan,
            }
        )
    harm = {
        "controls": len(harm_rows),
        "intervened": sum(h["intervened"] for h in harm_rows),
        "stopped": sum(bool(h["stopped"]) for h in harm_rows),
        "lost_accuracy_runs": sum(h["lost"] > 1e-9 for h in harm_rows),
        "lost_accuracy_max": max([h["lost"] for h in harm_rows], default=0.0),
        "supervisor_share_median": _median([h["supervisor_share"] for h in harm_rows]),
        "seconds_ratio_median": _median([h["seconds_ratio"] for h in harm_rows]),
    }
    return {
        "hurt_runs": len(hurt),
        "arms": arms_table,
        "groups": dict(groups),
        "types": dict(by_type),
        "harm": harm,
        "harm_rows": harm_rows,
        "runs": {arm: rs for arm, rs in rows.items()},
    }


def _mean(xs: list[Any]) -> float:
    vals = [float(x) for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return float(np.mean(vals)) if vals else math.nan


def _median(xs: list[Any]) -> float:
    vals = [float(x) for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return float(np.median(vals)) if vals else math.nan


# ---------------------------------------------------------------------------- rendering
def render(report: dict[str, Any]) -> str:
    lines = [
        "# Remediation: does the closed loop recover what a fault took?",
        "",
        f"Bench `{report['bench']}`: {report['hurt_runs']} hurt fault runs (end held-out accuracy kept "
        "< 90 % of",
        "the matched control's gain), each retrained with its fault present under each arm; every healthy",
        "control retrained under the playbook arm for harm. Recovered: ≥ 90 % of the control's gain kept.",
        "",
        "| arm | runs | recovered | weaker criterion | median gain kept | wasted steps | extra steps | "
        "time vs control | escalated | undone/run |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm, a in report["arms"].items():
        lines.append(
            f"| {arm} | {a['runs']} | {_pct(a['recovered'])} | {_pct(a['weaker'])} | "
            f"{_pct(a['kept_share_median'])} | {a['wasted_steps_mean']:.1f} | {a['extra_steps_mean']:.1f} | "
            f"×{_num(a['seconds_ratio_median'])} | "
            f"{_pct(a['escalated'])} | {_num(a['undone_mean'])} |"
        )
    h = report["harm"]
    lines += [
        "",
        "## Harm on healthy controls (playbook arm)",
        "",
        f"{h['controls']} controls: {h['intervened']} with an applied fix, {h['stopped']} stopped, "
        f"{h['lost_accuracy_runs']} ended with lower held-out accuracy than the control itself "
        f"(largest loss {h['lost_accuracy_max']:.3f}); supervisor time {_pct(h['supervisor_share_median'])} "
        f"of the run (median), run time ×{_num(h['seconds_ratio_median'])} the unsupervised control's.",
        "",
        "## Recovered, per family × strength × onset style",
        "",
    ]
    arms = list(report["arms"])
    lines += _recovered_table("group", report["groups"], arms)
    lines += ["", "## Recovered, per fault type", ""]
    lines += _recovered_table("type", report["types"], arms)
    return "\n".join(lines) + "\n"


def _recovered_table(label: str, rows: dict[str, dict[str, Any]], arms: list[str]) -> list[str]:
    """One Markdown row per key of `rows`: its run count and each arm's recovered share."""
    lines = [f"| {label} | runs | " + " | ".join(arms) + " |", "|---|---|" + "---|" * len(arms)]
    for key in sorted(rows):
        g = rows[key]
        n = g.get("nothing", {}).get("runs", 0)
        recovered = " | ".join(_pct(g.get(a, {}).get("recovered", math.nan)) for a in arms)
        lines.append(f"| {key} | {n} | {recovered} |")
    return lines


def _pct(x: float) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.0f} %"


def _num(x: float) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


def plot(report: dict[str, Any], path: Path) -> None:
    """Recovered share per arm and fault family, and the share of the control's gain kept per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(report["arms"])
    families = sorted({r["family"] for r in report["runs"].get("nothing", [])})
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5))
    width = 0.8 / max(1, len(arms))
    for i, arm in enumerate(arms):
        rs = report["runs"][arm]
        vals = [_mean([r["recovered"] for r in rs if r["family"] == f]) for f in families]
        ax1.bar(
            np.arange(len(families)) + i * width, [0 if math.isnan(v) else v for v in vals], width, label=arm
        )
    ax1.set_xticks(np.arange(len(families)) + width * (len(arms) - 1) / 2, families)
    ax1.set_ylabel("hurt runs recovered (≥ 90 % of the gain)")
    ax1.set_ylim(0, 1)
    ax1.legend(fontsize=8)
    data = [[r["kept_share"] for r in report["runs"][arm] if not math.isnan(r["kept_share"])] for arm in arms]
    ax2.boxplot(data, tick_labels=arms)
    ax2.axhline(RECOVERED, color="grey", linestyle="--", linewidth=1)
    ax2.set_ylabel("share of the control's held-out gain kept")
    ax2.set_ylim(-1.5, 1.6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
