"""`llamafoundry eval`: one command, a JSON report with every example and a table beside the paper's numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llamafoundry.cli import main
from llamafoundry.eval import report
from llamafoundry.eval.tasks.base import TaskResult


def test_eval_command_writes_json_and_markdown(model_folders, shared_data: Path, tmp_path: Path, capsys):
    out = tmp_path / "results"
    code = main(
        [
            "eval",
            str(model_folders["native"]),
            "--tasks",
            "arc_*,boolq",
            "--data-dir",
            str(shared_data),
            "--limit",
            "6",
            "--output",
            str(out),
        ]
    )
    assert code == 0
    data = json.loads((out / "results.json").read_text())
    assert [r["task"] for r in data["results"]] == ["arc_easy", "arc_challenge", "boolq"]
    boolq = data["results"][2]
    assert boolq["n"] == 6 and len(boolq["examples"]) == 6
    assert set(boolq["examples"][0]) >= {
        "id",
        "gold",
        "loglikelihoods",
        "unconditional",
        "acc",
        "acc_norm",
        "acc_answer",
    }
    assert boolq["metrics"]["acc_answer"] == sum(e["acc_answer"] for e in boolq["examples"]) / 6
    table = (out / "results.md").read_text()
    assert "| boolq | 0 | acc_answer* | 6 |" in table
    assert "| 60.5 | 79.3 | 83.7 | 84.8 | 83.9 | 88.0 | 76.5 | 78.1 | 83.1 | 85.3 |" in table
    assert table in capsys.readouterr().out


def test_limit_fraction_and_shot_lists_as_lm_eval(model_folders, shared_data: Path, tmp_path: Path):
    out = tmp_path / "r"
    assert (
        main(
            [
                "eval",
                str(model_folders["native"]),
                "--tasks",
                "openbookqa",
                "--data_dir",
                str(shared_data),
                "--limit",
                "0.01",
                "--num_fewshot",
                "0,2",
                "--output_path",
                str(out),
            ]
        )
        == 0
    )
    results = json.loads((out / "results.json").read_text())["results"]
    assert [(r["task"], r["shots"], r["n"]) for r in results] == [("openbookqa", 0, 5), ("openbookqa", 2, 5)]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--tasks", "hellaswagg"], "unknown task 'hellaswagg'"),
        (["--tasks", "piqa", "--shots", "two"], "--shots takes counts"),
        (["--tasks", "piqa", "--limit", "0"], "--limit must be positive"),
        (["--tasks", "piqa", "--data-dir", "/nonexistent/folder"], "is not a folder"),
        (["--tasks", "piqa", "--model-type", "hf", "--compile"], "apply to our model code"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(args, message, model_folders, tmp_path: Path, cli):
    run = cli("eval", model_folders["native"], *args, "--output", tmp_path / "out")
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and message in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "out").exists()


def test_model_without_tokenizer_asks_for_one(tmp_path: Path, shared_data: Path, capsys):
    assert (
        main(
            [
                "eval",
                "llama-1m",
                "--tasks",
                "piqa",
                "--data-dir",
                str(shared_data),
                "--limit",
                "1",
                "--output",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "--tokenizer" in capsys.readouterr().err


def test_markdown_places_our_numbers_beside_every_column_of_the_papers_tables():
    results = [
        TaskResult(
            "hellaswag", 0, {"acc": 0.25, "acc_norm": 0.5}, "acc_norm", [{}] * 4, details={"scored_form": "X"}
        ),
        TaskResult("nq_open", 5, {"em": 0.125}, "em", [{}] * 8),
        TaskResult("nq_open", 2, {"em": 0.25}, "em", [{}] * 8),
        TaskResult("gsm8k", 8, {"acc": 0.1, "maj1@16": 0.2}, "acc", [{}] * 10),
        TaskResult("math", 4, {"acc": 0.0, "maj1@256": 0.1}, "acc", [{}] * 10),
        TaskResult("humaneval", 0, {"pass@1": 0.1, "pass@10 (T=0.8)": 0.3}, "pass@1", [{}] * 10),
        TaskResult("mmlu", 5, {"acc": 0.3}, "acc", [{}] * 10, groups={"STEM": {"acc": 0.4, "n": 5}}),
    ]
    table = report.markdown(results, "m")
    # Table 3: GPT-3, Gopher, Chinchilla, PaLM 62B, PaLM-cont 62B, PaLM 540B, then LLaMA.
    assert (
        "| task | shots | metric | n | ours | GPT-3 175B | Gopher 280B | Chinchilla 70B | PaLM 62B | "
        "PaLM-cont 62B | PaLM 540B | LLaMA-7B | LLaMA-13B | LLaMA-33B | LLaMA-65B |"
    ) in table
    assert (
        "| hellaswag | 0 | acc_norm* | 4 | 50.0 | 78.9 | 79.2 | 80.8 | 79.7 | 80.6 | 83.4 | 76.1 | 79.2 |"
        in table
    )
    assert "| hellaswag | 0 | acc | 4 | 25.0 |" + " - |" * 10 in table
    assert (
        "| nq_open | 5 | em* | 8 | 12.5 | - | 24.5 | 31.5 | - | - | - | 22.0 | 28.1 | 32.9 | 35.0 |" in table
    )
    assert "| nq_open | 2 | em* | 8 | 25.0 |" + " - |" * 10 in table  # the paper has no 2-shot column
    # Table 7: our k = 16 is not the paper's, so every number shows its own k (Minerva 540B voted over 40).
    assert (
        "| gsm8k | 8 | maj1@16 | 10 | 20.0 | - | - | - | 28.4 (maj1@100) | 68.5 (maj1@100) | 78.5 (maj1@40) | "
        "18.1 (maj1@100) | 29.3 (maj1@100) | 53.1 (maj1@100) | 69.7 (maj1@100) |"
    ) in table
    assert (
        "| math | 4 | maj1@256 | 10 | 10.0 | - | - | - | 25.4 | 43.4 | 50.3 (maj1@64) | 6.9 | 8.8 |" in table
    )
    # Table 8: LaMDA and PaLM-cont; our pass@10 at T=0.8 beside the paper's pass@100.
    assert "| humaneval | 0 | pass@1* | 10 | 10.0 | 14.0 | 3.6 | 15.9 | 23.7 | 26.2 | 10.5 |" in table
    assert "| humaneval | 0 | pass@10 (T=0.8) | 10 | 30.0 | 47.3 (pass@100) | 18.7 (pass@100) |" in table
    # Table 9: GPT-NeoX to PaLM 540B, each domain.
    assert (
        "| mmlu | 5 | STEM | 5 | 40.0 | 34.9 | 36.7 | 47.4 | 54.9 | 23.8 | 41.9 | 55.6 | 30.5 | 35.8 |"
        in table
    )
    assert "- hellaswag: X" in table
