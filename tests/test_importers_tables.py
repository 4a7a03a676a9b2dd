"""Notebook HTML tables and CSV/TSV exports (plain, W&B history, W&B panel), on hand-written fixtures."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import pytest

from rftfm_agent.errors import InputError
from rftfm_agent.telemetry import importers
from rftfm_agent.telemetry.importers import csv_table, html_table
from rftfm_agent.telemetry.importers.base import read_head
from rftfm_agent.telemetry.schema import ImportedRun
from rftfm_agent.telemetry.vocabulary import map_row

FOREIGN_CSV = "name,street,city,zip\nAda Lovelace,St James Sq,London,SW1Y\nAlan Turing,Sherborne,Dorset,DT9\n"


EPOCH_TABLE = """
    <div>
      <progress value='30' max='30' style='width:300px; height:20px; vertical-align: middle;'></progress>
      [30/30 00:41, Epoch 3/3]
    </div>
    <table border="1" class="dataframe">
  <thead>
 <tr style="text-align: left;">
      <th>Epoch</th>
      <th>Training Loss</th>
      <th>Validation Loss</th>
      <th>Accuracy</th>
    </tr>
  </thead>
  <tbody>
    <tr>
      <td>1</td>
      <td>No log</td>
      <td>0.693147</td>
      <td>0.500000</td>
    </tr>
    <tr>
      <td>2</td>
      <td>No Log</td>
      <td>0.512000</td>
      <td>0.700000</td>
    </tr>
    <tr>
      <td>3</td>
      <td>0.401000</td>
      <td>nan</td>
      <td>0.800000</td>
    </tr>
  </tbody>
</table><p>
"""


def _by_step(run: ImportedRun) -> dict[int, dict[str, float]]:
    return {s.step: s.values for s in run.steps}


def _write(tmp_path: Path, name: str, data: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data)
    return path


# --- HTML notebook table -----------------------------------------------------------------------------
def test_notebook_table_steps_values_and_progress(fixtures: Path) -> None:
    (run,) = importers.load(fixtures / "nb_table.html")
    assert run.source.format == html_table.NAME == "hf_notebook_table"
    assert run.source.framework == "trl" and run.name == "nb_table"
    assert run.source.sha256 and run.source.paths == [str(fixtures / "nb_table.html")]
    steps = _by_step(run)
    assert sorted(steps) == [1, 2, 3, 4]
    assert "Training Loss" not in steps[1]  # 'No log' → absent, not zero
    assert steps[2]["Training Loss"] == 0.0 and steps[4]["Training Loss"] == 0.0002
    assert steps[2]["rewards / correctness_reward_func"] == 0.5  # header text kept as printed
    assert math.isnan(steps[3]["reward"]) and math.isinf(steps[3]["kl"])  # kept, never dropped
    assert "Step" not in steps[1]
    assert run.config["max_steps"] == 100 and run.config["progress_step"] == 5
    assert run.config["elapsed_s"] == 62 and run.config["progress_epoch"] == 0.05


def test_notebook_table_headers_map_through_the_vocabulary(fixtures: Path) -> None:
    from rftfm_agent.telemetry.vocabulary import resolve

    assert resolve("Training Loss")[0] == "loss"
    assert resolve("rewards / correctness_reward_func")[0] == "rewards/correctness_reward_func/mean"


def test_notebook_epoch_table_infers_steps_and_keeps_eval_columns(tmp_path: Path) -> None:
    path = _write(tmp_path, "epochs.html", EPOCH_TABLE)
    assert html_table.sniff(path, read_head(path))
    (run,) = html_table.read(path)
    steps = _by_step(run)
    assert sorted(steps) == [10, 20, 30]  # 30 steps over 3 epochs, from the progress bar
    assert steps[10]["Epoch"] == 1.0 and steps[20]["Validation Loss"] == 0.512
    assert "Training Loss" not in steps[20] and steps[30]["Training Loss"] == 0.401
    assert math.isnan(steps[30]["Validation Loss"])
    assert run.source.framework == "transformers"
    assert any("inferred from the Epoch column" in n for n in run.source.notes)


def test_notebook_table_cut_mid_row_keeps_complete_rows(fixtures: Path, tmp_path: Path) -> None:
    text = (fixtures / "nb_table.html").read_text()
    cut = text.index("<td>4</td>") + len("<td>4</td>\n      <td>0.000")
    path = _write(tmp_path, "cut.html", text[:cut])
    assert html_table.sniff(path, read_head(path))
    (run,) = html_table.read(path)
    assert [s.step for s in run.steps] == [1, 2, 3]  # the unfinished row for step 4 is dropped …
    assert any("dropped" in n for n in run.source.notes)  # … and the notes say so
    assert any("no closing </table>" in n for n in run.source.notes)


def test_notebook_table_cut_in_header_or_without_rows_is_an_error(fixtures: Path, tmp_path: Path) -> None:
    text = (fixtures / "nb_table.html").read_text()
    in_header = _write(tmp_path, "header.html", text[: text.index("<th>kl</th>")])
    with pytest.raises(InputError, match="cut off before the table header"):
        html_table.read(in_header)
    no_rows = _write(tmp_path, "norows.html", text[: text.index("<tbody>")] + "<tbody></tbody></table>")
    with pytest.raises(InputError, match="no complete rows"):
        html_table.read(no_rows)


def test_notebook_table_malformed_row_names_the_line(fixtures: Path, tmp_path: Path) -> None:
    text = (fixtures / "nb_table.html").read_text().replace("<td>140.250000</td>\n", "", 1)
    path = _write(tmp_path, "short_row.html", text)
    with pytest.raises(InputError, match=r"line \d+: table row has 7 cells but the header has 8"):
        html_table.read(path)
    bad_step = (fixtures / "nb_table.html").read_text().replace("<td>2</td>", "<td>two</td>", 1)
    with pytest.raises(InputError, match=r"line \d+: step 'two' is not a whole number"):
        html_table.read(_write(tmp_path, "bad_step.html", bad_step))


def test_html_that_is_not_a_training_table(tmp_path: Path) -> None:
    page = "<html><body><table><tr><th>Name</th><th>City</th></tr><tr><td>Ada</td><td>London</td></tr>"
    path = _write(tmp_path, "page.html", page + "</table></body></html>")
    assert not html_table.sniff(path, read_head(path))
    with pytest.raises(InputError, match="without a 'Step' or 'Epoch' column"):
        html_table.read(path)
    recipe = "<table><tr><th>Step</th><th>What</th></tr><tr><td>1</td><td>boil water</td></tr></table>"
    path = _write(tmp_path, "recipe.html", recipe)
    assert not html_table.sniff(path, read_head(path))  # a Step column alone does not make it ours
    with pytest.raises(InputError, match="no numeric values"):
        html_table.read(path)


# --- CSV exports -------------------------------------------------------------------------------------
def test_plain_metrics_csv(fixtures: Path) -> None:
    (run,) = importers.load(fixtures / "metrics.csv")
    assert run.source.format == csv_table.NAME == "csv_export"
    assert run.name == "metrics" and run.source.framework == "trl"
    steps = _by_step(run)
    assert sorted(steps) == [1, 2, 3, 4]
    assert steps[1]["learning_rate"] == 1e-6 and steps[2]["reward"] == 0.25
    assert math.isnan(steps[3]["reward"]) and "reward_std" not in steps[3]  # nan kept; empty → absent
    assert math.isinf(steps[4]["kl"])
    assert "step" not in steps[1] and all(s.wall_time is None for s in run.steps)


def test_tsv_is_read_like_csv(fixtures: Path, tmp_path: Path) -> None:
    tsv = (fixtures / "metrics.csv").read_text().replace(",", "\t")
    path = _write(tmp_path, "metrics.tsv", tsv)
    assert csv_table.sniff(path, read_head(path))
    (run,) = csv_table.read(path)
    (ref,) = csv_table.read(fixtures / "metrics.csv")
    assert [s.step for s in run.steps] == [s.step for s in ref.steps]
    assert run.steps[1].values == ref.steps[1].values


def test_log_history_dataframe_csv_with_index_and_summary_row(tmp_path: Path) -> None:
    """`pd.DataFrame(trainer.state.log_history).to_csv()`: unnamed index, eval row, closing summary row."""
    text = (
        ",loss,reward,epoch,step,eval_loss,train_runtime,train_loss\n"
        "0,0.1,0.2,0.1,1,,,\n"
        "1,0.2,0.3,0.2,2,,,\n"
        "2,,,0.2,2,0.5,,\n"
        "3,,,0.2,2,,10.0,0.15\n"
    )
    (run,) = importers.load(_write(tmp_path, "log_history.csv", text))
    steps = _by_step(run)
    assert sorted(steps) == [1, 2] and steps[2]["eval_loss"] == 0.5 and steps[2]["reward"] == 0.3
    assert "train_runtime" not in steps[2] and run.config["summary/train_runtime"] == 10.0
    assert all("" not in v for v in steps.values())  # the index column is not a metric


def test_tensorboard_scalar_csv(tmp_path: Path) -> None:
    text = "Wall time,Step,Value\n1700000000.5,1,0.25\n1700000001.5,2,nan\n"
    path = _write(tmp_path, "run-.-tag-train_reward.csv", text)
    (run,) = importers.load(path)
    assert [(s.step, s.wall_time) for s in run.steps] == [(1, 1700000000.5), (2, 1700000001.5)]
    # the tag comes from TensorBoard's file name (its '/' written '_'), not the column's 'Value'
    assert run.steps[0].values == {"train/reward": 0.25} and math.isnan(run.steps[1].values["train/reward"])
    again = _write(tmp_path, "run-.-tag-train_kl (1).csv", text)  # a browser's second download
    assert importers.load(again)[0].steps[0].values == {"train/kl": 0.25}
    other = _write(tmp_path, "scalars.csv", text)  # a name TensorBoard did not give: kept as 'Value'
    assert importers.load(other)[0].steps[0].values == {"Value": 0.25}


def test_a_folder_of_tensorboard_scalar_csvs_is_one_run_with_each_tag_named(tmp_path: Path) -> None:
    """TensorBoard's "download CSV" writes one file per tag (`run-.-tag-train_kl.csv`): the folder is one
    run, each file's tag spelled back (`train_completions_mean_length` → completions/mean_length)."""
    folder = tmp_path / "grpo_run"
    folder.mkdir()
    for tag, values in {
        "train_reward": (0.2, 0.3, 0.4),
        "train_kl": (0.001, 0.002, 0.5),
        "train_completions_mean_length": (200, 210, 220),
        "train_rewards_accuracy_reward_mean": (0.1, 0.2, 0.3),
    }.items():
        rows = "".join(f"{1700000000 + s},{s * 5},{v}\n" for s, v in enumerate(values, 1))
        _write(folder, f"run-.-tag-{tag}.csv", "Wall time,Step,Value\n" + rows)
    (run,) = importers.load(folder)
    assert run.name == "grpo_run" and [s.step for s in run.steps] == [5, 10, 15]
    mapped = [{metric: value for metric, _, value in map_row(step.values)} for step in run.steps]
    assert {"reward", "kl", "completion_length", "rewards/accuracy_reward/mean"} <= set(mapped[0])
    assert [row["kl"] for row in mapped] == [0.001, 0.002, 0.5]


def test_wandb_history_export(fixtures: Path) -> None:
    (run,) = importers.load(fixtures / "wandb_history.csv")
    assert run.source.format == "csv_export" and run.source.framework == "trl"
    assert any("W&B run-history" in n for n in run.source.notes)
    steps = _by_step(run)
    assert sorted(steps) == [1, 2, 3, 4]  # train/global_step, not W&B's _step (0..4)
    assert run.steps[0].wall_time == 1735689612.5  # _timestamp
    assert steps[3]["eval/reward"] == 0.42 and steps[3]["train/reward"] == 0.35  # train + eval rows merged
    assert math.isnan(steps[3]["train/loss"])
    assert all("_step" not in v and "_timestamp" not in v and "_wandb" not in v for v in steps.values())
    assert steps[2]["train/completions/mean_length"] == 205.5


def test_wandb_panel_export_gives_one_run_per_run_name(fixtures: Path) -> None:
    runs = importers.load(fixtures / "wandb_panel.csv")
    by_name = {r.name: r for r in runs}
    assert sorted(by_name) == ["grpo-qwen-lr1e-6", "grpo-qwen-lr5e-6"]
    slow, fast = _by_step(by_name["grpo-qwen-lr1e-6"]), _by_step(by_name["grpo-qwen-lr5e-6"])
    assert sorted(slow) == [1, 2, 3, 4] and sorted(fast) == [1, 3, 4]  # empty cells are not steps
    assert slow[2] == {"train/reward": 0.15}  # the __MIN/__MAX envelopes are not data
    assert math.isnan(slow[4]["train/reward"])
    assert fast[3]["train/reward"] == 0.4


def test_foreign_csv_is_not_ours(tmp_path: Path) -> None:
    path = _write(tmp_path, "addresses.csv", FOREIGN_CSV)
    assert not csv_table.sniff(path, read_head(path))
    assert not html_table.sniff(path, read_head(path))
    with pytest.raises(InputError, match="unknown format"):
        importers.load(path)
    # a numeric table without any step column is not claimed either
    numbers = _write(tmp_path, "numbers.csv", "price,area\n100,20\n200,35\n")
    assert not csv_table.sniff(numbers, read_head(numbers))


def test_csv_with_unparsable_rows_names_the_line(fixtures: Path, tmp_path: Path) -> None:
    lines = (fixtures / "metrics.csv").read_text().splitlines()
    extra = _write(tmp_path, "extra.csv", "\n".join([*lines[:3], lines[3] + ",7", *lines[4:]]) + "\n")
    assert csv_table.sniff(extra, read_head(extra))
    with pytest.raises(InputError, match=r"line 4: 10 fields but the header has 9"):
        csv_table.read(extra)
    word = _write(tmp_path, "word.csv", "\n".join([*lines[:2], lines[2].replace("0.25", "oops"), *lines[3:]]))
    with pytest.raises(InputError, match=r"line 3: 'oops' is not a number \(column 'reward'\)"):
        csv_table.read(word)
    step = _write(tmp_path, "step.csv", "\n".join([*lines[:4], "four" + lines[4][1:]]))
    with pytest.raises(InputError, match=r"line 5: step 'four' in column 'step' is not a whole number"):
        csv_table.read(step)


def test_csv_row_with_values_but_no_step_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "nostep.csv", "step,reward\n1,0.5\n,0.7\n3,0.9\n")
    with pytest.raises(InputError, match=r"line 3: the step column 'step' is empty"):
        csv_table.read(path)


def test_csv_step_too_large_for_the_store_names_the_line(tmp_path: Path) -> None:
    """A step at or past 2**63 cannot be stored as a 64-bit step: one line naming it, not a wrapped step."""
    for text in (
        "step,reward,kl\n1,0.5,0.1\n1e20,0.6,0.1\n",
        "Step,a - reward,b - reward\n1,0.5,0.1\n9.3e18,1,2\n",
    ):
        path = tmp_path / "big.csv"
        path.write_text(text)
        with pytest.raises(InputError, match=r"line 3: step '.*' in column '.*' is not a whole number"):
            csv_table.read(path)


def test_csv_columns_are_parsed_as_cell_by_cell() -> None:
    """A CSV column is parsed all at once (numpy) or, when numpy refuses a cell, cell by cell: either way
    every cell reads as `to_float` reads it, absent words are absent, and words are text."""
    import random

    import numpy as np

    from rftfm_agent.telemetry.importers.base import to_float

    cells = [
        "1.5",
        " 2 ",
        "-3e-4",
        "nan",
        "NaN",
        "-nan",
        "inf",
        "-Infinity",
        "1_000",
        "",
        " ",
        "None",
        "null",
    ]
    cells += ["no log", "-", "np.float64(0.25)", "tensor(1.5)", "abc", "True", '{"a": 1}', "x" * 5000]
    rng = random.Random(0)
    for _ in range(300):
        rows = [
            (n + 2, [rng.choice(cells[: rng.choice([15, len(cells)])])]) for n in range(rng.randint(0, 9))
        ]
        column = csv_table._Table(header=["v"], rows=rows, delimiter=",").column(0)
        for k, (_, (cell,)) in enumerate(rows):
            absent = cell.strip().lower() in {"", "none", "null", "no log", "-"}
            expected = None if absent else to_float(cell)
            assert column.absent[k] == absent, cell
            assert column.text[k] == (not absent and expected is None), cell
            got = column.value[k]
            assert (math.isnan(got) and (expected is None or math.isnan(expected))) or got == expected, cell
        assert column.value.dtype == np.float64


def test_csv_cut_mid_row_loses_that_row_with_a_note_and_a_short_row_inside_is_an_error(
    fixtures: Path, tmp_path: Path
) -> None:
    """A logger killed mid-write leaves its last row short and without a newline: the run is read
    without it and says so, as the JSON-lines importers do. A short row that ends with a newline was not
    cut while being written: it is an error naming it."""
    text = (fixtures / "metrics.csv").read_text()
    whole = {s.step: s.values for s in importers.load(_write(tmp_path, "whole.csv", text))[0].steps}
    (run,) = importers.load(_write(tmp_path, "cut.csv", text[: text.rindex("160.0")]))
    assert "truncated: the last line (5) has 6 of 9 fields: skipped" in run.source.notes
    kept = {k: v for k, v in whole.items() if k != max(whole)}
    assert str({s.step: s.values for s in run.steps}) == str(kept)  # str: NaN equals NaN
    path = _write(tmp_path, "short.csv", text[: text.rindex("160.0")] + "\n")
    with pytest.raises(InputError, match=r"line 5: 6 fields but the header has 9"):
        importers.load(path)


def test_csv_header_only(tmp_path: Path) -> None:
    path = _write(tmp_path, "header.csv", "step,loss,reward\n")
    with pytest.raises(InputError, match="no data rows"):
        csv_table.read(path)


# --- bad input for both ------------------------------------------------------------------------------
@pytest.mark.parametrize("module", [html_table, csv_table])
def test_empty_and_binary_files_are_input_errors(module: object, tmp_path: Path) -> None:
    empty = _write(tmp_path, "empty.dat", b"")
    garbage = _write(tmp_path, "garbage.dat", os.urandom(4096) + b"\x00" * 64)
    for path in (empty, garbage):
        assert not module.sniff(path, read_head(path))  # type: ignore[attr-defined]
    with pytest.raises(InputError, match="empty"):
        module.read(empty)  # type: ignore[attr-defined]
    with pytest.raises(InputError, match="binary"):
        module.read(garbage)  # type: ignore[attr-defined]
    with pytest.raises(InputError):
        importers.load(garbage)


def test_sniffers_do_not_claim_each_others_formats(fixtures: Path) -> None:
    html = fixtures / "nb_table.html"
    csvs = [fixtures / n for n in ("metrics.csv", "wandb_history.csv", "wandb_panel.csv")]
    assert html_table.sniff(html, read_head(html)) and not csv_table.sniff(html, read_head(html))
    for path in csvs:
        assert csv_table.sniff(path, read_head(path)) and not html_table.sniff(path, read_head(path))
    for name in ("trainer_state.json", "hf_console.log", "verl_console.log"):
        other = fixtures / name
        if other.exists():
            head = read_head(other)
            assert not html_table.sniff(other, head) and not csv_table.sniff(other, head)


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("nb_table.html", "hf_notebook_table"),
        ("metrics.csv", "csv_export"),
        ("wandb_history.csv", "csv_export"),
        ("wandb_panel.csv", "csv_export"),
    ],
)
def test_load_dispatches_by_content_not_name(fixtures: Path, tmp_path: Path, name: str, fmt: str) -> None:
    renamed = tmp_path / "whatever.log"
    shutil.copy(fixtures / name, renamed)
    runs = importers.load(renamed)
    assert runs and all(r.source.format == fmt for r in runs)
    assert runs[0].steps


# --- the real notebook tables ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("folder", "rows"),
    [
        ("unsloth_llama31_8b_gsm8k_grpo_nb", 250),
        ("unsloth_llama31_8b_gsm8k_grpo_nb_stalled", 27),
        ("unsloth_qwen25_15b_gsm8k_grpo_nb", 250),
    ],
)
def test_real_notebook_tables(realruns: Path, folder: str, rows: int) -> None:
    (run,) = importers.load(realruns / folder / "trainer_log_table.html")
    assert run.source.format == "hf_notebook_table"
    assert len(run.steps) == rows and [s.step for s in run.steps] == list(range(1, rows + 1))
    assert all("reward" in s.values and "completion_length" in s.values for s in run.steps)
    assert run.config["max_steps"] == 250


def test_csv_skip_bad_leaves_malformed_rows_out_and_counts_them(tmp_path: Path) -> None:
    """Without --skip-bad the first malformed row is a one-line error naming its line; with it, every
    malformed row (a field count unlike the header's, a stray word in a number column, a step that is
    not a whole number, an empty step on a row with values) is left out and counted, the rest read."""
    path = tmp_path / "history.csv"
    lines = [
        "train/global_step,train/reward,train/kl",
        "1,0.1,0.01",
        "2,0.2,0.02",
        "3,0.3",  # line 4: a field short (the file was cut or edited)
        "4,oops,0.04",  # line 5: a word where the column holds numbers
        "5.5,0.5,0.05",  # line 6: a fractional step
        ",0.6,0.06",  # line 7: no step although the row logs values
        "8,0.8,0.08",
    ]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match="line 4: 2 fields"):
        csv_table.read(path)
    (run,) = csv_table.read(path, skip_bad=True)
    assert [s.step for s in run.steps] == [1, 2, 8]
    assert [s.values["train/reward"] for s in run.steps] == [0.1, 0.2, 0.8]
    (note,) = [n for n in run.source.notes if n.startswith("--skip-bad")]
    assert "4 malformed row(s) of history.csv" in note and "line 4: 2 fields" in note
    # The same through `importers.load`, as `rftfm ingest --skip-bad` reads a file.
    (loaded,) = importers.load(path, skip_bad=True)
    assert [s.step for s in loaded.steps] == [1, 2, 8]


def test_csv_skip_bad_keeps_row_numbers_as_steps_and_refuses_a_file_without_a_good_row(
    tmp_path: Path,
) -> None:
    stepless = tmp_path / "stepless.csv"
    stepless.write_text("reward,kl\n0.1,0.01\n0.2\n0.3,0.03\n")
    (run,) = csv_table.read(stepless, skip_bad=True)
    assert [s.step for s in run.steps] == [1, 3]  # a left-out row keeps its place: steps are row numbers
    hopeless = tmp_path / "hopeless.csv"
    hopeless.write_text("step,reward,kl\n1,0.1\n2.5,0.2,0.02\n")
    with pytest.raises(InputError, match=r"no readable row \(2 malformed, first: line 2"):
        csv_table.read(hopeless, skip_bad=True)


@pytest.mark.parametrize("name", ["metrics.csv", "wandb_history.csv", "wandb_panel.csv"])
def test_csv_skip_bad_reads_a_clean_file_as_without_it(fixtures: Path, name: str) -> None:
    plain, skipping = csv_table.read(fixtures / name), csv_table.read(fixtures / name, skip_bad=True)

    def seen(runs: list) -> list:  # repr: a logged NaN equals itself
        return [(r.name, repr(r.steps), r.source.notes, r.config) for r in runs]

    assert seen(plain) == seen(skipping)


def test_csv_skip_bad_equals_reading_the_file_without_its_bad_rows(tmp_path: Path) -> None:
    """On random tables with a step column and a few malformed rows, --skip-bad reads what the file
    without those rows reads, and counts exactly them (a row that logs nothing is not read, so its step
    is not checked, as without --skip-bad)."""
    import random

    rng = random.Random(7)
    for case in range(60):
        metrics = [f"train/m{j}" for j in range(rng.randint(1, 4))]
        lines = [",".join(["train/global_step", *metrics])]
        good, spoiled = [lines[0]], 0
        for step in range(1, rng.randint(3, 30)):
            cells = [str(step), *[rng.choice([f"{rng.random():.4f}", "", "nan", "inf"]) for _ in metrics]]
            kind = rng.random()
            if kind < 0.08:
                cells = cells[:-1]  # a field short
            elif kind < 0.14:
                cells[rng.randrange(1, len(cells))] = "oops"  # a stray word
            elif kind < 0.18:
                cells[0] = f"{step}.5"  # a fractional step: malformed where the row logs a value
                if not any(cells[1:]):
                    good.append(",".join(cells))
                    kind = 1.0
            else:
                good.append(",".join(cells))
            spoiled += kind < 0.18
            lines.append(",".join(cells))
        path, clean = tmp_path / f"case{case}.csv", tmp_path / f"clean{case}.csv"
        path.write_text("\n".join(lines) + "\n")
        clean.write_text("\n".join(good) + "\n")
        try:
            expected = repr(csv_table.read(clean)[0].steps)
        except InputError:
            continue  # no value left to read: not this property's case
        (run,) = csv_table.read(path, skip_bad=True)
        assert repr(run.steps) == expected, path.read_text()
        notes = [n for n in run.source.notes if n.startswith("--skip-bad")]
        assert (notes[0].split(" malformed")[0] == f"--skip-bad: {spoiled}") if spoiled else not notes


def test_a_folder_of_wandb_panels_is_one_run_per_run_on_one_axis(tmp_path: Path) -> None:
    """The W&B UI exports one panel (metric) per CSV: a folder of a run's reward and KL panels gave two
    one-metric runs of one name. Panels on the same x-axis are merged; on another axis they stay apart."""
    panels = tmp_path / "panels"
    panels.mkdir()
    for metric, value in (("train/reward", 0.5), ("train/kl", 0.01)):
        rows = [f'"Step","run-a - {metric}","run-a - {metric}__MIN","run-b - {metric}"']
        rows += [f'"{s}","{value * s}","0","{value}"' for s in (1, 2, 3)]
        (panels / f"{metric.replace('/', '_')}.csv").write_text("\n".join(rows) + "\n")
    runs = {r.name: r for r in importers.load(panels)}
    assert sorted(runs) == ["run-a", "run-b"]
    assert _by_step(runs["run-a"])[2] == {"train/reward": 1.0, "train/kl": 0.02}
    assert any("2 panels of this run merged" in n for n in runs["run-a"].source.notes)
    assert len(runs["run-a"].source.paths) == 2
    (panels / "train_loss.csv").write_text('"train/global_step","run-a - train/loss"\n"10","0.3"\n')
    loaded = importers.load(panels)
    assert sorted(r.name for r in loaded) == ["run-a", "run-a", "run-b"]
    assert all(any("another x-axis" in n for n in r.source.notes) for r in loaded if r.name == "run-a")
    # Two runs of one display name (W&B names runs per project) plotting the same metric: not spliced.
    same = tmp_path / "same"
    same.mkdir()
    for i, value in enumerate((0.2, 0.8)):
        (same / f"reward{i}.csv").write_text(
            '"Step","run-a - train/reward"\n' + f'"1","{value}"\n"2","{value}"\n'
        )
    runs = importers.load(same)
    assert sorted(_by_step(r)[2]["train/reward"] for r in runs) == [0.2, 0.8]
    assert all(any("same metric: kept apart" in n for n in r.source.notes) for r in runs)
