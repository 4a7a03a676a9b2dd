"""Learning curves of healthy testbed runs: does a healthy GRPO run learn?

    python -m rftfm_agent.evals.learning_curves --seeds 5 --png docs/learning_curves.png

Trains `rftfm testbed train`'s default healthy run (only the seed changes) on every task, and reports per
task the median over seeds of the gain in training reward (mean of the last three logged steps minus the
first three) and in held-out accuracy (last evaluation minus the first), with the curves as a PNG. Also
times one held-out evaluation and gives its standard error (problems as clusters).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rftfm_agent.telemetry.store import Store
from rftfm_agent.testbed.heldout import heldout_correct, heldout_standard_error
from rftfm_agent.testbed.model import WarmupConfig, load_policy, warm_model
from rftfm_agent.testbed.runner import RunSpec, run
from rftfm_agent.testbed.tasks import WARMUP_TASKS

EDGE = 3  # logged steps averaged at each end of the reward curve (one step's 64 samples are noisy)


def curves(tasks: tuple[str, ...], seeds: int, steps: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"tasks": {}, "spec": RunSpec(name="default").model_dump(mode="json")}
    for task in tasks:
        runs = []
        for seed in range(seeds):
            with tempfile.TemporaryDirectory() as tmp:
                spec = RunSpec(name=f"curve-{task}-{seed}", task=task, seed=seed)
                if steps is not None:
                    spec = spec.model_copy(update={"steps": steps})
                store = Store(Path(tmp) / "store")
                started = time.perf_counter()
                result = run(spec, store, Path(tmp) / "work")
                frame = store.steps(result.run_id)
                reward = frame["reward"].tolist()
                runs.append(
                    {
                        "seed": seed,
                        "seconds": round(time.perf_counter() - started, 1),
                        "reward": reward,
                        "heldout": result.heldout,
                        "reward_gain": statistics.mean(reward[-EDGE:]) - statistics.mean(reward[:EDGE]),
                        "heldout_gain": result.heldout[-1][1] - result.heldout[0][1],
                    }
                )
        out["tasks"][task] = {
            "runs": runs,
            "median_reward_gain": statistics.median(r["reward_gain"] for r in runs),
            "median_heldout_gain": statistics.median(r["heldout_gain"] for r in runs),
        }
    return out


def heldout_cost(task: str) -> dict[str, float]:
    """Seconds for one held-out evaluation of the warmed-up policy, and its standard error."""
    model, tokenizer = load_policy(warm_model(WarmupConfig()))
    started = time.perf_counter()
    graded = heldout_correct(model, tokenizer, task)
    seconds = time.perf_counter() - started
    answers = sum(map(len, graded))
    return {
        "task": task,
        "answers": answers,
        "accuracy": sum(map(sum, graded)) / answers,
        "standard_error": heldout_standard_error(graded),
        "seconds": round(seconds, 3),
    }


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(report["tasks"])
    fig, axes = plt.subplots(2, len(tasks), figsize=(4 * len(tasks), 6), squeeze=False)
    for col, task in enumerate(tasks):
        for r in report["tasks"][task]["runs"]:
            axes[0][col].plot(range(1, len(r["reward"]) + 1), r["reward"], alpha=0.6, lw=1)
            steps, acc = zip(*r["heldout"], strict=True)
            axes[1][col].plot(steps, acc, marker="o", alpha=0.6, lw=1)
        axes[0][col].set_title(f"{task}: training reward")
        axes[1][col].set_title(f"{task}: held-out accuracy")
        for row in (0, 1):
            axes[row][col].set_ylim(0, 1)
            axes[row][col].set_xlabel("step")
    fig.suptitle("Healthy GRPO runs on the testbed (default settings, one line per seed)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render(report: dict[str, Any]) -> str:
    lines = [
        "| task | median reward gain | median held-out gain | seeds | seconds per run |",
        "|---|---|---|---|---|",
    ]
    for task, t in report["tasks"].items():
        secs = statistics.median(r["seconds"] for r in t["runs"])
        lines.append(
            f"| {task} | {t['median_reward_gain']:+.3f} | {t['median_heldout_gain']:+.3f} | "
            f"{len(t['runs'])} | {secs:.1f} |"
        )
    for cost in report.get("heldout_cost", []):
        lines.append(
            f"\nheld-out evaluation, {cost['task']}: {cost['answers']} answers, accuracy "
            f"{cost['accuracy']:.3f} ± {cost['standard_error']:.3f} (standard error), {cost['seconds']:.2f} s"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--tasks", default=",".join(WARMUP_TASKS))
    parser.add_argument("--steps", type=int, default=None, help="default: RunSpec's")
    parser.add_argument("--png", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    tasks = tuple(args.tasks.split(","))
    report = curves(tasks, args.seeds, args.steps)
    report["heldout_cost"] = [heldout_cost(task) for task in tasks]
    if args.png:
        plot(report, args.png)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    print(render(report))


if __name__ == "__main__":
    main()
