"""rftfm beside the tools a user would pick instead — rl-doctor (`rldoctor` on PyPI) and rlwatch — on the
same logs, scored against our labels.

    rftfm eval peers --realruns ../shared/realruns [--bench bench-mini] [--markdown docs/peers.md]

Cases: every labelled real log (evals/realrun_labels.toml) and, with --bench, every finished benchmark run
exported to CSV (controls are healthy; a fault run is broken with the symptoms its fault type shows in the
metrics, `FAULT_TOPICS`). All three tools see the same per-step metrics:

* rftfm imports the log itself (real logs: the original file; benchmark runs: the exported CSV, so it has
  no healthy band and judges each run in self mode, as it would a stranger's log), then detects and
  diagnoses with the shipped models;
* rl-doctor gets the rows rftfm parsed (its own readers cannot read console logs or notebook tables), under
  canonical names its alias table resolves, through `rl_doctor.run_from_records` + `diagnose`;
* rlwatch gets the same rows replayed through `RLWatch.log_step` (it has no offline reader), its SQLite
  log in a temporary folder, with no config file or environment.

Scored per case: flagged (any finding at warning or above), critical (any critical finding), symptom
right (broken runs: a finding at warning or above whose topic is one the labels accept; each tool's
detectors are mapped to the same topics below), seconds. Totals: true findings (broken runs flagged with a
right symptom) and false criticals (critical findings on runs judged healthy). Unclear runs are listed
but not scored.
"""

from __future__ import annotations

import io
import math
import tempfile
import time
import tomllib
from collections.abc import Callable, Sequence
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from rftfm_agent.detect.api import detect_runs
from rftfm_agent.detect.bench_data import load_bench
from rftfm_agent.diagnose.api import diagnose_runs
from rftfm_agent.errors import RftfmError
from rftfm_agent.telemetry import importers
from rftfm_agent.telemetry.store import Store

LABELS = Path(__file__).with_name("realrun_labels.toml")

# The topics a finding can be about; every tool's detectors are mapped onto them.
TOPICS = (
    "learning signal",
    "reward function",
    "KL",
    "numerics",
    "entropy",
    "length",
    "progress",
    "optimiser",
    "advantages",
)

RLDOCTOR_TOPICS: dict[str, tuple[str, ...]] = {
    "advantage_collapse": ("learning signal",),
    "gradient_pathology": ("numerics", "learning signal"),  # its findings are zero or exploding gradients
    "entropy_collapse": ("entropy",),
    "reward_hacking": ("reward function",),
    "length_pathology": ("length",),
    "clip_saturation": ("optimiser",),
    "kl_drift": ("KL",),
    "reward_composition": ("reward function",),
    "plateau": ("progress",),
}
RLWATCH_TOPICS: dict[str, tuple[str, ...]] = {
    "entropy_collapse": ("entropy",),
    "kl_explosion": ("KL",),
    "reward_hacking": ("reward function",),
    "advantage_variance": ("learning signal", "advantages"),
    "loss_nan": ("numerics",),
    "gradient_norm_spike": ("numerics",),
    "reward_mean_drift": ("progress",),
}

# What each fault type shows in the metrics a CSV export carries (a tool naming one of these named it).
FAULT_TOPICS: dict[str, tuple[str, ...]] = {
    "rf_sign_flip": ("progress", "reward function"),  # the policy is pushed away from correct answers
    "rf_noise": ("progress", "learning signal"),  # the reward no longer tracks correctness
    "rf_hackable": ("reward function", "length", "progress"),  # reward rises, accuracy does not
    "rf_sparse": ("learning signal", "reward function"),  # most groups all-zero
    "pg_temperature": ("entropy", "length"),
    "pg_truncation": ("length",),
    "pg_degenerate": ("entropy", "length"),
    "od_lr": ("numerics", "KL", "entropy", "optimiser"),
    "od_kl": ("KL",),
    "od_grad": ("numerics",),
    "od_optimizer_reset": ("numerics", "optimiser", "KL"),
    "ca_advantage_sign": ("progress", "advantages"),
    "ca_group_misalign": ("learning signal", "advantages", "progress"),
    "ca_baseline": ("advantages", "progress"),
    "te_tool_error": ("progress", "reward function"),
    "te_tool_corrupt": ("progress", "reward function"),
}

# Canonical names → rlwatch's log_step keywords.
RLWATCH_KEYS = {
    "entropy": "entropy",
    "kl": "kl_divergence",
    "reward": "reward_mean",
    "reward_std": "reward_std",
    "loss": "loss",
    "learning_rate": "learning_rate",
    "grad_norm": "grad_norm",
}


@dataclass(frozen=True)
class Case:
    name: str
    source: str  # "real" | "bench"
    judgement: str  # "broken" | "healthy" | "unclear"
    topics: tuple[str, ...]
    path: Path  # the file or folder rftfm imports
    map: dict[str, str] = field(default_factory=dict)


@dataclass
class Answer:
    flagged: bool
    critical: bool
    topics: set[str]  # topics of findings at warning or above
    said: str  # the findings, short
    seconds: float


# --------------------------------------------------------------------------------------------- the tools
def run_rftfm(case: Case, store: Store) -> tuple[Answer, list[dict[str, Any]]]:
    """Import, detect and diagnose; the parsed canonical rows are returned for the peers."""
    run_ids = [store.write_run(r)[0].run_id for r in importers.load(case.path, case.map or None)]
    run_id = run_ids[-1]  # an SFT phase before RL comes first: the RL run is the last
    started = time.perf_counter()
    detect_runs(store, [run_id], save=False)
    ((d, _v),) = diagnose_runs(store, [run_id])
    seconds = time.perf_counter() - started
    worth = [f for f in d.findings if f.severity in ("warning", "critical")]
    answer = Answer(
        flagged=bool(worth),
        critical=any(f.severity == "critical" for f in worth),
        topics={f.topic for f in worth},
        said="; ".join(f"{f.severity[0]}:{f.topic}" for f in worth) or d.symptom[:40],
        seconds=seconds,
    )
    rows = store.steps(run_id).to_dict("records")
    clean = [{k: v for k, v in r.items() if isinstance(v, int | float) and not _nan(v)} for r in rows]
    return answer, clean


def run_rldoctor(rows: list[dict[str, Any]]) -> Answer:
    from rl_doctor import Severity, diagnose, run_from_records

    started = time.perf_counter()
    d = diagnose(run_from_records(rows, name="case"))
    seconds = time.perf_counter() - started
    worth = [f for f in d.findings if f.severity >= Severity.WARNING]
    topics: set[str] = set()
    for f in worth:
        mapped = RLDOCTOR_TOPICS.get(f.detector, ())
        if f.detector == "gradient_pathology":  # one detector, two problems: read which one it reports
            mapped = ("learning signal",) if "zero" in f.summary.lower() else ("numerics",)
        topics.update(mapped)
    return Answer(
        flagged=bool(worth),
        critical=any(f.severity >= Severity.CRITICAL for f in worth),
        topics=topics,
        said="; ".join(f"{f.severity.name[0].lower()}:{f.detector}" for f in worth) or "-",
        seconds=seconds,
    )


def run_rlwatch(rows: list[dict[str, Any]]) -> Answer:
    import rlwatch.alerts
    from rlwatch import RLWatch, RLWatchConfig

    rlwatch.alerts._log_alert_console = lambda *args, **kwargs: None  # its rich panels would flood stderr
    alerts = []
    with tempfile.TemporaryDirectory() as tmp:
        config = RLWatchConfig(run_id="case", framework="manual")  # not load_config: no ./rlwatch.yaml, env
        config.storage.log_dir = tmp
        started = time.perf_counter()
        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
            monitor = RLWatch(config)
            for row in rows:
                kwargs = {RLWATCH_KEYS[k]: float(v) for k, v in row.items() if k in RLWATCH_KEYS}
                alerts += monitor.log_step(int(row["step"]), **kwargs)
            monitor._store.close()
        seconds = time.perf_counter() - started
    topics = {t for a in alerts for t in RLWATCH_TOPICS.get(a.detector, ())}
    kinds = sorted({f"{a.severity[0]}:{a.detector}" for a in alerts})
    return Answer(
        flagged=bool(alerts),
        critical=any(a.severity == "critical" for a in alerts),
        topics=topics,
        said="; ".join(kinds) or "-",
        seconds=seconds,
    )


def _nan(v: float) -> bool:
    return isinstance(v, float) and math.isnan(v)


# --------------------------------------------------------------------------------------------- the cases
def real_cases(realruns: Path, labels: Path = LABELS) -> list[Case]:
    table = tomllib.loads(labels.read_text(encoding="utf-8"))["runs"]
    out = []
    for name, label in sorted(table.items()):
        folder = Path(realruns) / name
        if folder.is_dir():
            topics = tuple(label.get("topics", ()))
            out.append(Case(name, "real", label["judgement"], topics, folder))
    return out


def bench_cases(bench: Path, out_dir: Path, limit: int | None = None) -> list[Case]:
    """Every finished benchmark run, its step metrics exported to a CSV file in `out_dir`."""
    runs = sorted(load_bench(bench), key=lambda r: r.run_id)
    if limit is not None:
        controls = [r for r in runs if r.meta["control_or_fault"] == "control"][: max(1, limit // 4)]
        faults = [r for r in runs if r.meta["control_or_fault"] != "control"][: limit - len(controls)]
        runs = controls + faults
    out_dir.mkdir(parents=True, exist_ok=True)
    cases = []
    for run in runs:
        fault = run.meta.get("fault_type") or ""
        control = run.meta["control_or_fault"] == "control"
        keep = [c for c in run.frame.columns if not c.startswith("traj/")]  # what a dashboard export has
        path = out_dir / f"{run.run_id}.csv"
        run.frame[keep].to_csv(path, index=False)
        cases.append(
            Case(
                name=f"{run.run_id} ({'control' if control else fault})",
                source="bench",
                judgement="healthy" if control else "broken",
                topics=() if control else FAULT_TOPICS.get(fault, ()),
                path=path,
            )
        )
    return cases


# ------------------------------------------------------------------------------------------- the scores
TOOLS: dict[str, Callable[[list[dict[str, Any]]], Answer]] = {
    "rldoctor": run_rldoctor,
    "rlwatch": run_rlwatch,
}


def evaluate(cases: Sequence[Case], progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """One row per case: each tool's answer and whether it was right."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "store")
        for case in cases:
            if progress:
                progress(case.name)
            ours, parsed = run_rftfm(case, store)
            answers = {"rftfm": ours} | {name: tool(parsed) for name, tool in TOOLS.items()}
            row: dict[str, Any] = {"case": case.name, "source": case.source, "truth": case.judgement}
            for name, a in answers.items():
                row[name] = {
                    "flagged": a.flagged,
                    "critical": a.critical,
                    "right": bool(case.judgement == "broken" and a.flagged and a.topics & set(case.topics)),
                    "said": a.said,
                    "seconds": a.seconds,
                }
            rows.append(row)
    return rows


def totals(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    out = {}
    broken = [r for r in rows if r["truth"] == "broken"]
    healthy = [r for r in rows if r["truth"] == "healthy"]
    for tool in ("rftfm", *TOOLS):
        out[tool] = {
            "broken": len(broken),
            "flagged_broken": sum(r[tool]["flagged"] for r in broken),
            "true_findings": sum(r[tool]["right"] for r in broken),
            "healthy": len(healthy),
            "false_criticals": sum(r[tool]["critical"] for r in healthy),
            "flagged_healthy": sum(r[tool]["flagged"] for r in healthy),
            "seconds": sum(r[tool]["seconds"] for r in rows),
        }
    return out


def to_markdown(rows: Sequence[dict[str, Any]], command: str) -> str:
    tools = ("rftfm", *TOOLS)
    total = totals(rows)
    lines = [
        "# rftfm beside rl-doctor and rlwatch",
        "",
        f"Measured with `{command}` (rldoctor 0.2.0, rlwatch 0.5.1; the module docstring of "
        "`evals/compare_peers.py` says how each tool is run and scored).",
        "",
        "| | " + " | ".join(tools) + " |",
        "|---|" + "---|" * len(tools),
        "| broken runs flagged with a right symptom (true findings) | "
        + " | ".join(f"{total[t]['true_findings']} / {total[t]['broken']}" for t in tools)
        + " |",
        "| broken runs flagged at all | "
        + " | ".join(f"{total[t]['flagged_broken']} / {total[t]['broken']}" for t in tools)
        + " |",
        "| critical findings on healthy runs (false criticals) | "
        + " | ".join(f"{total[t]['false_criticals']} / {total[t]['healthy']}" for t in tools)
        + " |",
        "| healthy runs with any warning | "
        + " | ".join(f"{total[t]['flagged_healthy']} / {total[t]['healthy']}" for t in tools)
        + " |",
        "| seconds, all runs (after parsing) | "
        + " | ".join(f"{total[t]['seconds']:.2f}" for t in tools)
        + " |",
        "",
        "Per run (✓ right symptom on a broken run; ✗ flagged but a wrong symptom or missed; "
        "**C** a critical finding; w:/c: warning/critical, then what it named):",
        "",
        "| run | truth | " + " | ".join(tools) + " |",
        "|---|---|" + "---|" * len(tools),
    ]
    for r in rows:
        cells = []
        for t in tools:
            a = r[t]
            mark = ("✓ " if a["right"] else "✗ ") if r["truth"] == "broken" else ""
            mark += "**C** " if a["critical"] else ""
            cells.append(f"{mark}{a['said'][:60]}")
        lines.append(f"| {r['case']} | {r['truth']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run(
    realruns: Path | None, bench: Path | None, limit: int | None, work: Path, progress: Callable[[str], None]
) -> list[dict[str, Any]]:
    cases: list[Case] = []
    if realruns is not None:
        if not Path(realruns).is_dir():
            raise RftfmError(f"{realruns}: no such folder of real logs")
        cases += real_cases(Path(realruns))
    if bench is not None:
        cases += bench_cases(Path(bench), work / "bench-csv", limit)
    if not cases:
        raise RftfmError("nothing to compare: give --realruns and/or --bench")
    return evaluate(cases, progress)


def frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Flat table (one column per tool and score), for --json and checks."""
    flat = []
    for r in rows:
        item = {"case": r["case"], "truth": r["truth"]}
        for t in ("rftfm", *TOOLS):
            item.update({f"{t}_{k}": v for k, v in r[t].items()})
        flat.append(item)
    return pd.DataFrame(flat)
