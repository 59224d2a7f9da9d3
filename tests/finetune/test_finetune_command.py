"""`llamafoundry finetune` end to end on a tiny model: the held-out loss on the replies goes down, the
model folder carries the chat template that serving and HF transformers apply, and resume is exact."""

import json
import os
import signal
import threading
import time

import openai
import pytest
from safetensors.torch import load_file

from llamafoundry.checkpoint import load_model
from llamafoundry.finetune.template import LLAMA2_TEMPLATE
from llamafoundry.inference.chat import _render_jinja, load_chat_template, render_chat
from llamafoundry.inference.generate import Generator
from llamafoundry.inference.server import Server
from llamafoundry.train.metrics import read_metrics
from tests.finetune.conftest import finetune_args
from tests.helpers import serving, train_losses

MESSAGES = [
    {"role": "system", "content": "Answer in one word."},
    {"role": "user", "content": "Name a fruit."},
    {"role": "assistant", "content": "Apple."},
    {"role": "user", "content": "Name a colour."},
]


@pytest.fixture(scope="module")
def alpaca_file(tmp_path_factory, alpaca):
    path = tmp_path_factory.mktemp("data") / "alpaca48.json"
    path.write_text(json.dumps(alpaca[:48]))
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory, base_model, alpaca_file, shared_data):
    """A 12-step finetune on 40 Alpaca examples (8 held out), MMLU (1 question a subject) before and after."""
    from tests.helpers import run_cli

    out = tmp_path_factory.mktemp("finetune") / "run"
    args = finetune_args(base_model, [alpaca_file], out)
    done = run_cli(*args, "--tasks", "mmlu", "--limit", "1", "--data-dir", str(shared_data))
    assert done.returncode == 0, done.stderr
    return out, done.stdout


def test_finetune_lowers_the_held_out_loss_on_the_replies(run):
    out, stdout = run
    val = [r for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "val"]
    assert [r["step"] for r in val] == [0, 12]
    assert val[-1]["loss"] < val[0]["loss"] - 0.3
    assert f"held-out loss on the replies {val[0]['loss']:.4f} -> {val[-1]['loss']:.4f}" in stdout
    report = (out / "report.md").read_text()
    assert f"| held-out loss (replies) | {val[0]['loss']:.4f} | {val[-1]['loss']:.4f} | - |" in report
    mmlu = f"| mmlu/acc | {val[0]['eval/mmlu/acc']:.4f} | {val[-1]['eval/mmlu/acc']:.4f} | 63.4 -> 68.9 |"
    assert mmlu in report
    assert "alpaca48.json: 48 conversations" in report and "8 held out" in report
    assert (out / "loss_curve.png").is_file() and (out / "config.toml").is_file()


def test_the_model_folder_carries_the_template_that_serving_reads(run, base_model):
    out, _ = run
    model, tokenizer, _ = load_model(out / "model")
    base, _, _ = load_model(base_model)
    assert any(
        (a != b).any() for a, b in zip(model.state_dict().values(), base.state_dict().values(), strict=True)
    )
    template = load_chat_template(out / "model")
    assert template.jinja == LLAMA2_TEMPLATE
    prompt = render_chat(MESSAGES, template, tokenizer)
    text = "<s>[INST] <<SYS>>\nAnswer in one word.\n<</SYS>>\n\nName a fruit. [/INST] Apple.</s><s>[INST] Name a colour. [/INST]"
    assert _render_jinja(template.jinja, MESSAGES, tokenizer) == text
    assert prompt[0] == tokenizer.bos_id and prompt.count(tokenizer.eos_id) == 1


def test_hf_transformers_applies_the_same_template(run):
    transformers = pytest.importorskip("transformers")
    out, _ = run
    hf = transformers.AutoTokenizer.from_pretrained(out / "model")
    _, tokenizer, _ = load_model(out / "model")
    template = load_chat_template(out / "model")
    text = hf.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert text == _render_jinja(template.jinja, MESSAGES, tokenizer)
    ids = hf.apply_chat_template(MESSAGES, tokenize=True, add_generation_prompt=True)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    assert list(ids) == render_chat(MESSAGES, template, tokenizer)


def test_the_served_chat_endpoint_answers_as_the_model_was_trained(base_model, tmp_path, cli):
    """Finetuned to answer every question "Yes.", the served model says so through the chat endpoint:
    training and serving agree on the template, and the reply ends with EOS."""
    data = tmp_path / "yes.jsonl"
    data.write_text(
        "".join(
            json.dumps({"prompt": f"Question {i}: is {i} a number?", "completion": "Yes."}) + "\n"
            for i in range(40)
        )
    )
    out = tmp_path / "run"
    done = cli(*finetune_args(base_model, [data], out, train__steps=30, train__lr=1e-2))
    assert done.returncode == 0, done.stderr
    model, tokenizer, _ = load_model(out / "model")
    template = load_chat_template(out / "model")
    server = Server(Generator(model, tokenizer, max_seq_len=128), "tiny", chat_template=template)
    question = [{"role": "user", "content": "Question 77: is 77 a number?"}]
    with serving(server) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)
        reply = client.chat.completions.create(model="tiny", messages=question, max_tokens=16, temperature=0)
    assert reply.usage.prompt_tokens == len(render_chat(question, template, tokenizer))
    assert reply.choices[0].message.content.strip() == "Yes."
    assert reply.choices[0].finish_reason == "stop"


def test_a_finetune_stopped_by_ctrl_c_resumes_exactly(base_model, alpaca_file, tmp_path, cli):
    settings = {"train__steps": 8, "checkpoint__every": 2, "eval__at_start": "false"}
    straight = cli(*finetune_args(base_model, [alpaca_file], tmp_path / "straight", **settings))
    assert straight.returncode == 0, straight.stderr

    out = tmp_path / "stopped"
    marker = out / "checkpoints" / "step_00000002" / "trainer_state.json"

    def ctrl_c_after_the_first_checkpoint():
        deadline = time.monotonic() + 120
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)  # the run stops at the end of the step under way

    threading.Thread(target=ctrl_c_after_the_first_checkpoint, daemon=True).start()
    stopped = cli(*finetune_args(base_model, [alpaca_file], out, **settings))
    assert stopped.returncode == 130 and "--resume" in stopped.stderr, stopped.stderr
    assert not (out / "model").exists()
    resumed = cli(*finetune_args(base_model, [alpaca_file], out, **settings), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    b = load_file(out / "model" / "model.safetensors")
    assert all((a[k] == b[k]).all() for k in a)
    assert train_losses(out) == train_losses(tmp_path / "straight")
