"""`rftfm demo`: the bundled example run, end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rftfm_agent.cli.common import StoreOpt, console, friendly_errors, open_store
from rftfm_agent.cli.detect import detect
from rftfm_agent.cli.diagnose import diagnose
from rftfm_agent.cli.telemetry import ingest, runs, show


@friendly_errors
def demo(
    store: StoreOpt = None,
    png: Annotated[Path | None, typer.Option(help="where to write the plot")] = Path("rftfm-demo.png"),
) -> None:
    """Ingest the bundled example run (a real tiny GRPO run recorded by TRL), show, detect, diagnose."""
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
