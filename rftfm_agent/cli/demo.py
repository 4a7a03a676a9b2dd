"""`rftfm demo`: a testbed run goes wrong mid-run and the supervisor catches it, diagnoses it, checks the
policy, fixes it, resumes and recovers, beside the same run left alone and its healthy control; then the
agent triages the run left alone (a report with the diagnosis and a policy-checked fix).

With `--example`, the older tour instead: ingest the bundled real TRL log, show, detect, diagnose.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from rftfm_agent.cli.common import StoreOpt, console, friendly_errors, open_store, write_report
from rftfm_agent.cli.detect import detect
from rftfm_agent.cli.diagnose import diagnose
from rftfm_agent.cli.telemetry import ingest, runs, show

DEMO_FAULT = "od_lr:easy@10:high"  # the learning rate jumps ×100 at step 10 of 30 (a bad resume, a typo)
RECOVERED = 0.9  # share of the control's held-out gain a recovered run keeps (DESIGN.md §6)


@friendly_errors
def demo(
    store: StoreOpt = None,
    png: Annotated[Path | None, typer.Option(help="where to write the plot")] = Path("rftfm-demo.png"),
    fault: Annotated[
        str, typer.Option(help="the fault to inject: TYPE:STRENGTH[@ONSET][:VARIANT]")
    ] = DEMO_FAULT,
    workdir: Annotated[Path, typer.Option(help="checkpoints of the three runs")] = Path("rftfm-runs/demo"),
    example: Annotated[
        bool, typer.Option(help="instead: ingest, detect and diagnose the bundled real TRL log")
    ] = False,
) -> None:
    """A run goes wrong mid-run; the supervisor detects, diagnoses, checks the policy, fixes, resumes and
    recovers (a few minutes on a CPU; the first time, the testbed's model is pre-trained first)."""
    if example:
        _example(store, png)
        return
    import shutil

    from rftfm_agent.evals.closed_loop import supervised_testbed_run
    from rftfm_agent.faults.registry import hooks_for
    from rftfm_agent.supervise.policy import Policy
    from rftfm_agent.testbed.model import WarmupConfig, warm_model
    from rftfm_agent.testbed.runner import RunSpec, parse_fault, run

    st = open_store(store)
    parsed = parse_fault(fault)
    for part in ("healthy", "faulty", "supervised"):  # the demo's own checkpoints from an earlier demo only
        shutil.rmtree(workdir / part, ignore_errors=True)
    console.print(
        "[bold]0. the testbed[/bold]: a ~1M-parameter causal LM learning arithmetic with GRPO (TRL)"
    )
    warm_model(WarmupConfig())
    base = RunSpec(name="demo-healthy", eval_every=5)
    console.print("[bold]1. healthy control[/bold] (30 GRPO steps)")
    control = run(base, st, workdir / "healthy")
    faulty_spec = base.model_copy(update={"name": "demo-faulty", "fault": parsed})
    console.print(f"[bold]2. the same run with a fault[/bold] {fault}, left alone")
    faulty = run(faulty_spec, st, workdir / "faulty", hooks=hooks_for(parsed))
    console.print("[bold]3. the same faulty run under the supervisor[/bold] (policy: the default, mode auto)")
    policy = Policy.load(mode="auto")
    supervised = supervised_testbed_run(
        faulty_spec.model_copy(update={"name": "demo-supervised"}), st, workdir / "supervised", policy
    )
    console.print("[bold]4. what the supervisor decided and why[/bold]")
    from rftfm_agent.cli.supervise import journal

    journal(supervised.result.run_id, store=st.root, as_json=False)
    first, healthy_end = control.heldout[0][1], control.heldout[-1][1]
    gain = healthy_end - first

    def kept(end: float | None) -> str:
        if end is None or gain <= 0:
            return "?"
        return f"{(end - first) / gain:.0%} of the control's gain"

    console.print("[bold]5. outcome[/bold] (held-out accuracy at the end of the run)")
    console.print(f"  healthy control   {healthy_end:.1%}  (from {first:.1%})")
    console.print(f"  faulty, alone     {faulty.heldout[-1][1]:.1%}  {kept(faulty.heldout[-1][1])}")
    end = supervised.final_heldout
    console.print(
        f"  faulty, supervised {end:.1%}  {kept(end)}; {supervised.steps_trained} steps trained for "
        f"{supervised.final_step} kept; supervisor's own time {supervised.result.supervisor_seconds:.2f} s "
        f"of {supervised.result.seconds:.1f} s"
        if end is not None
        else "  faulty, supervised: no held-out accuracy"
    )
    recovered = end is not None and gain > 0 and end - first >= RECOVERED * gain
    console.print(f"  recovered (≥ {RECOVERED:.0%} of the control's gain): {'yes' if recovered else 'no'}")
    if png is not None:
        write_report(png, lambda: _plot(png, st, control, faulty, supervised, parsed))
        console.print(f"  plot: {png}")
    _triage(st, faulty.run_id, workdir / "triage")


def _triage(st: Any, run_id: str, folder: Path) -> None:
    """Step 6: the agent's one-shot triage of the run left alone (offline: the deterministic planner)."""
    from rftfm_agent.agent.report import symptom_line, to_html
    from rftfm_agent.agent.triage import run_triage
    from rftfm_agent.cli.agent import make_env

    console.print("[bold]6. the agent's triage of the run left alone[/bold] (rftfm triage, offline)")
    state, _, _ = run_triage(make_env(st, None, None, None, folder), run_id)
    diagnosis = state.get("diagnosis") or {}
    top = (diagnosis.get("hypotheses") or [{}])[0]
    chosen = next((p for p in state.get("allowed") or [] if p["id"] == state.get("choice")), None)
    console.print(f"  symptom: {symptom_line(diagnosis, state.get('detection') or {})}", markup=False)
    console.print(f"  diagnosis: {top.get('type')} (p = {top.get('probability')})", markup=False)
    console.print(
        f"  proposed fix: {chosen['summary']} — policy: {chosen['verdict']}"
        if chosen
        else "  proposed fix: none",
        markup=False,
    )
    folder.mkdir(parents=True, exist_ok=True)
    write_report(folder / "report.md", lambda: (folder / "report.md").write_text(state["report"]))
    write_report(
        folder / "report.html", lambda: (folder / "report.html").write_text(to_html(state["report"], run_id))
    )
    console.print(f"  report: {folder / 'report.md'} (and .html)")


def _plot(path: Path, st: Any, control: Any, faulty: Any, supervised: Any, fault: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True)
    colours = {"healthy control": "tab:green", "faulty, alone": "tab:red", "faulty, supervised": "tab:blue"}
    kept_rows = supervised.supervisor.timeline if supervised.supervisor else []
    abandoned = supervised.supervisor.abandoned if supervised.supervisor else []
    for label, run_id in (("healthy control", control.run_id), ("faulty, alone", faulty.run_id)):
        frame = st.steps(run_id)
        top.plot(frame["step"], frame["reward"], color=colours[label], label=label, **_style(label))
    top.plot(
        [r["step"] for r in kept_rows],
        [r.get("reward") for r in kept_rows],
        color=colours["faulty, supervised"],
        label="faulty, supervised",
    )
    if abandoned:
        top.plot(
            [r["step"] for r in abandoned],
            [r.get("reward") for r in abandoned],
            "o",
            color=colours["faulty, supervised"],
            alpha=0.3,
            markersize=3,
            label="rolled back (abandoned)",
        )
    for label, history in (
        ("healthy control", control.heldout),
        ("faulty, alone", faulty.heldout),
        ("faulty, supervised", supervised.heldout),
    ):
        bottom.plot(
            [s for s, _ in history],
            [a for _, a in history],
            marker="o",
            color=colours[label],
            label=label,
            **_style(label),
        )
    for axis in (top, bottom):
        axis.axvline(fault.onset_step, color="grey", linestyle=":", linewidth=1)
    top.set_ylabel("mean reward")
    top.set_title(f"fault {fault.type} ({fault.strength}) from step {fault.onset_step}: grey line")
    top.legend(fontsize=8)
    bottom.set_ylabel("held-out accuracy")
    bottom.set_xlabel("optimizer step")
    bottom.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _style(label: str) -> dict[str, Any]:
    """The control drawn wide and dashed underneath: a fix that fully recovers lies right on top of it."""
    return {"linewidth": 4, "linestyle": "--", "alpha": 0.6} if label == "healthy control" else {}


def _example(store: Path | None, png: Path | None) -> None:
    from rftfm_agent.resources import example_path

    st = open_store(store)
    example = example_path("tiny_grpo_trainer_state.json")
    console.print(f"[bold]1. ingest[/bold] {example}")
    ingest([example], store=st.root, replace=False, skip_bad=False, as_json=False)
    console.print("[bold]2. runs[/bold]")
    runs(store=st.root, as_json=False)
    console.print("[bold]3. show[/bold]")
    show("tiny_grpo_trainer_state", store=st.root, png=png, all_metrics=False, as_json=False)
    console.print("[bold]4. detect[/bold]")
    detect(["tiny_grpo_trainer_state"], store=st.root, detector=None, save=True, as_json=False)
    console.print("[bold]5. diagnose[/bold]")
    diagnose(["tiny_grpo_trainer_state"], store=st.root, library=None, detector=None, top=3, as_json=False)
