"""Generate a benchmark: every run of a preset, trained for real, recorded into `OUT/store`.

    generate("mini", Path("bench-mini"), workers=2)

- Parallel: a process pool (spawned workers, one torch thread each) by default; a Ray cluster when
  `ray_address` is given (then OUT must be on a filesystem every node sees).
- Resumable: a run is done when the store holds it with status "finished". On start, finished runs are
  skipped and unfinished ones (an interrupted worker leaves a "live" run) are discarded and redone.
- Deterministic: runs are defined by (preset, seed) alone and each trains with fixed seeds on one thread,
  so the same preset and seed give the same records on the same machine, whatever the worker count.
- Labelled: `OUT/metadata/registries/<preset>.csv` holds the paper's registry columns plus onset, strength,
  seed, onset style, variant and the matched-control cell; it is written before any run starts.

`OUT/generation.jsonl` gets one line per finished run (seconds, steps, trajectories): the speed benchmark
and the generation report read it.
"""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rftfm_agent.bench.presets import RunPlan, plan, scale
from rftfm_agent.errors import RftfmError
from rftfm_agent.telemetry.faultbench_export import write_registry
from rftfm_agent.telemetry.store import Store
from rftfm_agent.testbed.model import WarmupConfig, warm_model

PLAN_FILE = "plan.json"
LOG_FILE = "generation.jsonl"


@dataclass
class GenerationReport:
    preset: str
    seed: int
    total: int
    skipped: int
    made: int
    failed: list[str]
    seconds: float
    out: Path


def run_one(spec_json: str, store_root: str, work_root: str, cache: str | None) -> dict[str, Any]:
    """Worker body: train one planned run into the store; returns its timing (runs in a child process)."""
    if cache:
        os.environ["RFTFM_CACHE"] = cache
    import torch

    from rftfm_agent.faults.registry import hooks_for
    from rftfm_agent.telemetry.store import Store
    from rftfm_agent.testbed.runner import RunSpec, run

    torch.set_num_threads(1)
    spec = RunSpec.model_validate_json(spec_json)
    workdir = Path(work_root) / spec.name
    started = time.perf_counter()
    try:
        result = run(spec, Store(store_root), workdir, hooks=hooks_for(spec.fault), quiet=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if result.recorder_errors:
        # Its records are incomplete: remove it, so that a resumed generation makes it again instead of
        # skipping a run that says "finished".
        Store(store_root).discard_run(result.run_id)
        raise RuntimeError(f"{spec.name}: recorder errors: {result.recorder_errors[:3]}")
    return {
        "experiment_id": spec.name,
        "run_id": result.run_id,
        "seconds": round(time.perf_counter() - started, 3),
        "steps": result.steps,
        "trajectories": result.steps * spec.batch_size,
        "task": spec.task,
        "fault": spec.fault.type if spec.fault else None,
    }


def _check_plan_file(out: Path, preset: str, seed: int) -> None:
    path = out / PLAN_FILE
    wanted = {"preset": preset, "seed": seed}
    if path.is_file():
        found = json.loads(path.read_text())
        if {k: found.get(k) for k in wanted} != wanted:
            raise RftfmError(
                f"{out}: holds preset {found.get('preset')!r} seed {found.get('seed')}, "
                f"not {preset!r} seed {seed}; use another --out"
            )


def prepare(preset: str, out: Path, seed: int) -> tuple[list[RunPlan], list[RunPlan], Store]:
    """Write plan and registry; discard unfinished runs; return (all plans, plans still to run, store)."""
    plans = plan(preset, seed)
    out.mkdir(parents=True, exist_ok=True)
    _check_plan_file(out, preset, seed)
    (out / PLAN_FILE).write_text(json.dumps({"preset": preset, "seed": seed, **scale(plans)}, indent=2))
    write_registry(out, preset, [p.registry_row() for p in plans])
    store = Store(out / "store")
    finished: set[str] = set()
    for manifest in store.manifests():
        if manifest.status == "finished":
            finished.add(manifest.name)
        else:
            store.discard_run(manifest.run_id)  # interrupted mid-run: redo it from the start
    todo = [p for p in plans if p.experiment_id not in finished]
    return plans, todo, store


def generate(
    preset: str,
    out: Path,
    *,
    workers: int | None = None,
    seed: int = 0,
    ray_address: str | None = None,
    limit: int | None = None,
    progress: Callable[[int, int, dict[str, Any] | None], None] | None = None,
) -> GenerationReport:
    """Make every missing run of the preset in `out`. `limit` stops after that many new runs."""
    out = Path(out).resolve()  # workers (Ray ones too) get absolute paths
    started = time.perf_counter()
    plan(preset, seed)  # an unknown preset fails here, before anything is trained or written
    out.mkdir(parents=True, exist_ok=True)
    lock = exclusive_lock(out, "generate", "rftfm bench generate")
    warm_model(WarmupConfig())  # once, before the workers start, so none of them trains it
    plans, todo, store = prepare(preset, out, seed)
    skipped = len(plans) - len(todo)
    if limit is not None:
        todo = todo[:limit]
    work_root = out / "work"
    work_root.mkdir(exist_ok=True)
    cache = os.environ.get("RFTFM_CACHE")
    args = [(p.spec.model_dump_json(), str(store.root), str(work_root), cache) for p in todo]
    failed: list[str] = []
    made = 0
    if progress:
        progress(skipped, len(plans), None)
    with (out / LOG_FILE).open("a") as log:

        def finished(info: dict[str, Any]) -> None:
            nonlocal made
            made += 1
            log.write(json.dumps(info) + "\n")
            log.flush()
            if progress:
                progress(skipped + made, len(plans), info)

        if ray_address:
            run_on_ray(ray_address, args, finished, failed)
        else:
            run_in_pool(workers or max(1, os.cpu_count() or 1), args, finished, failed)
    shutil.rmtree(work_root, ignore_errors=True)
    lock.close()
    return GenerationReport(
        preset, seed, len(plans), skipped, made, failed, time.perf_counter() - started, out
    )


def exclusive_lock(out: Path, name: str, command: str) -> Any:
    """Hold `out/.<name>.lock` (the open file; closing it releases the lock), or fail with one line if
    another `command` already writes in `out`."""
    lock = (out / f".{name}.lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise RftfmError(f"{out}: another `{command}` is writing here") from None
    return lock


def run_in_pool(
    workers: int,
    args: list[tuple[Any, ...]],
    finished: Callable[[dict[str, Any]], None],
    failed: list[str],
    worker: Callable[..., dict[str, Any]] = run_one,
) -> None:
    """Run `worker(*a)` for every `a` in `args` (a spec's JSON first) on `workers` spawned processes.

    `worker` must be importable by name (a module-level function): the remediation evaluation passes its
    own closed-loop worker, so its runs go through the same pool as the benchmark's."""
    if workers == 1:
        for a in args:
            try:
                finished(worker(*a))
            except Exception as exc:
                failed.append(f"{json.loads(a[0])['name']}: {type(exc).__name__}: {exc}")
        return
    context = multiprocessing.get_context("spawn")  # no fork after torch's thread pools have started
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        queue = list(reversed(args))
        running: dict[Future[dict[str, Any]], str] = {}
        while queue or running:
            while queue and len(running) < workers * 2:
                a = queue.pop()
                try:
                    running[pool.submit(worker, *a)] = json.loads(a[0])["name"]
                except BrokenProcessPool as exc:  # a worker died (e.g. killed for memory): stop cleanly
                    failed.extend(f"{json.loads(b[0])['name']}: not run: {exc}" for b in [a, *queue])
                    queue.clear()
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                name = running.pop(future)
                try:
                    finished(future.result())
                except Exception as exc:
                    failed.append(f"{name}: {type(exc).__name__}: {exc}")


def run_on_ray(
    address: str,
    args: list[tuple[Any, ...]],
    finished: Callable[[dict[str, Any]], None],
    failed: list[str],
    worker: Callable[..., dict[str, Any]] = run_one,
) -> None:
    """The same worker body as Ray tasks (one CPU each). `address`: a cluster address, or 'local'."""
    try:
        import ray
    except ImportError:
        raise RftfmError("--ray needs Ray: pip install 'rftfm[ray]'") from None
    ray.init(address=None if address == "local" else address, ignore_reinit_error=True, log_to_driver=False)
    remote = ray.remote(num_cpus=1, max_retries=1)(worker)
    pending = {remote.remote(*a): json.loads(a[0])["name"] for a in args}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            name = pending.pop(ref)
            try:
                finished(ray.get(ref))
            except Exception as exc:
                failed.append(f"{name}: {type(exc).__name__}: {exc}")
