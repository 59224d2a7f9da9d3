"""A Hugging Face folder's chat template survives `convert` to every format that holds one, and
`generate --chat` renders with it: the special tokens of the template are single ids, as in
transformers' `apply_chat_template`, for every kind of tokenizer; generation ends at end of turn."""

from __future__ import annotations

import shutil

import gguf
import pytest
import torch

from llamafoundry.checkpoint.hf import save_hf
from llamafoundry.inference.chat import (
    ChatTemplate,
    end_of_turn,
    load_chat_template,
    render_chat,
    render_reply,
)
from llamafoundry.inference.generate import Generator
from llamafoundry.inference.sampling import SamplingParams
from llamafoundry.tokenizer import load_tokenizer
from tests.helpers import random_model
from tests.tokenizer.conftest import LLAMA3_TEMPLATE, VOCAB, tiny_config

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi there <|eot_id|>?"},
    {"role": "assistant", "content": "Hello! 😀"},
    {"role": "user", "content": "def f(x):\n    return x"},
]


@pytest.fixture
def hf_folder(llama3_files, tmp_path):
    """A Llama-3-shaped HF model folder whose only tokenizer file is tokenizer.json."""
    folder = save_hf(tmp_path / "hf-source", random_model(tiny_config()))
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(llama3_files["json"] / name, folder / name)
    return folder


@pytest.mark.parametrize("fmt", ["native", "hf", "gguf"])
def test_convert_keeps_the_chat_template(hf_folder, tmp_path, cli, fmt):
    out = tmp_path / ("m.gguf" if fmt == "gguf" else fmt)
    done = cli("convert", hf_folder, "-o", out, "--to", fmt)
    assert done.returncode == 0, done.stderr
    if fmt == "gguf":
        assert gguf.GGUFReader(out).fields["tokenizer.chat_template"].contents() == LLAMA3_TEMPLATE
    else:
        assert load_chat_template(out).jinja == LLAMA3_TEMPLATE


def test_a_chat_template_jinja_file_is_read_and_carried(hf_folder, tmp_path, cli):
    config = hf_folder / "tokenizer_config.json"
    config.write_text(config.read_text().replace("chat_template", "unused"))
    (hf_folder / "chat_template.jinja").write_text(LLAMA3_TEMPLATE)
    assert cli("convert", hf_folder, "-o", tmp_path / "out", "--to", "hf").returncode == 0
    assert load_chat_template(tmp_path / "out").jinja == LLAMA3_TEMPLATE


@pytest.mark.parametrize("source", ["json", "tiktoken"])
def test_rendered_ids_equal_transformers_apply_chat_template(llama3_files, source):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(llama3_files["json"])
    expected = hf.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True, return_dict=False)
    tok = load_tokenizer(llama3_files[source])
    ids = render_chat(MESSAGES, ChatTemplate(LLAMA3_TEMPLATE, stop=()), tok)
    assert ids == list(expected)
    assert ids.count(VOCAB + 6) == 5  # <|start_header_id|>: one id per header, not characters


def test_sentencepiece_templates_encode_bos_and_eos_as_ids(shared_data):
    tok = load_tokenizer(shared_data / "models" / "llama_tokenizer" / "tokenizer.model")
    template = ChatTemplate(
        "{% for m in messages %}{{ bos_token + '[INST] ' + m['content'] + ' [/INST]' }}"
        "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{% endfor %}",
        stop=(),
    )
    ids = render_chat(MESSAGES[1:3], template, tok)
    assert ids.count(tok.bos_id) == 2 and ids.count(tok.eos_id) == 1
    assert end_of_turn(template, tok) == ()  # this template writes no token right after a reply


def test_generation_stops_at_the_templates_end_of_turn(llama3_files, tmp_path):
    for name in ("tokenizer.json", "tokenizer_config.json"):  # no generation_config.json
        shutil.copy(llama3_files["json"] / name, tmp_path / name)
    tok = load_tokenizer(tmp_path)
    template = ChatTemplate(LLAMA3_TEMPLATE, stop=())
    assert tok.eos_ids == (VOCAB + 1,) and end_of_turn(template, tok) == (VOCAB + 9,)
    model = random_model(tiny_config())
    with torch.no_grad():
        model.output.weight[VOCAB + 9] = 5 * model.tok_embeddings.weight.abs().max()  # <|eot_id|> wins
    prompt = render_chat(MESSAGES, template, tok)
    params = SamplingParams(max_new_tokens=5, temperature=0)
    assert Generator(model, tok).generate([prompt], params)[0].finish_reason == "length"
    done = Generator(model, tok, stop_ids=end_of_turn(template, tok)).generate([prompt], params)[0]
    assert (done.finish_reason, done.tokens) == ("stop", [])
    # generation_config.json's list (Llama 3 Instruct's end of text and end of turn) stops it too.
    assert Generator(model, load_tokenizer(llama3_files["json"])).generate([prompt], params)[0].tokens == []


def test_a_finetuned_reply_ends_at_the_templates_end_of_turn(llama3_files):
    """Training examples end as generation does: at <|eot_id|>, with no EOS after it."""
    tok = load_tokenizer(llama3_files["json"])
    prompt, reply = render_reply(MESSAGES[:2], "Hello! 😀", ChatTemplate(LLAMA3_TEMPLATE, stop=()), tok)
    assert reply[-1] == VOCAB + 9 and tok.decode(reply) == "Hello! 😀<|eot_id|>"


def test_generate_chat_prints_the_reply_to_the_rendered_prompt(hf_folder, cli):
    from transformers import AutoTokenizer

    from llamafoundry.checkpoint import load_model

    model, tok, _ = load_model(hf_folder)
    messages = [{"role": "user", "content": "Hello there"}]
    prompt = AutoTokenizer.from_pretrained(hf_folder).apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=False
    )
    params = SamplingParams(max_new_tokens=8, temperature=0)
    reply = Generator(model, tok).generate([list(prompt)], params)[0].text
    done = cli("generate", hf_folder, "Hello there", "--chat", "--temperature", "0", "--max-new-tokens", "8")
    assert done.returncode == 0, done.stderr
    assert done.stdout == reply + "\n" and reply


def test_interactive_chat_keeps_the_history(hf_folder, cli):
    from llamafoundry.checkpoint import load_model

    model, tok, _ = load_model(hf_folder)
    template, params = load_chat_template(hf_folder), SamplingParams(max_new_tokens=3, temperature=0)
    generator = Generator(model, tok, stop_ids=end_of_turn(template, tok))
    history, replies = [], []
    for line in ("Hi", "And then?"):
        history.append({"role": "user", "content": line})
        replies.append(generator.generate([render_chat(history, template, tok)], params)[0].text)
        history.append({"role": "assistant", "content": replies[-1]})
    done = cli(
        "generate",
        hf_folder,
        "--chat",
        "--temperature",
        "0",
        "--max-new-tokens",
        "3",
        stdin="Hi\n\nAnd then?\n",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "".join(reply + "\n" for reply in replies)
