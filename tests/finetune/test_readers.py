"""Instruction files in each format become conversations; a malformed one is one clear line naming the
file and the record, and the finetune writes nothing."""

import gzip
import json

import pytest

from llamafoundry.finetune.data import read_conversations
from tests.finetune.conftest import finetune_args
from tests.helpers import assert_user_error


def jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_alpaca_json_gz_reads_every_record(shared_data, alpaca):
    conversations = read_conversations([shared_data / "instructions" / "alpaca_5000.json.gz"])
    assert len(conversations) == 5000
    first, with_input = alpaca[0], next(r for r in alpaca if r["input"])
    assert conversations[0].messages == [
        {"role": "user", "content": f"{first['instruction']}\n\n{first['input']}"},
        {"role": "assistant", "content": first["output"]},
    ]
    assert (
        conversations[alpaca.index(with_input)].messages[0]["content"].endswith("\n\n" + with_input["input"])
    )
    no_input = next(i for i, r in enumerate(alpaca) if not r["input"])
    assert conversations[no_input].messages[0]["content"] == alpaca[no_input]["instruction"]
    assert conversations[0].source.endswith("alpaca_5000.json.gz record 1")


def test_self_instruct_seed_tasks_give_one_conversation_per_instance(shared_data):
    path = shared_data / "instructions" / "seed_tasks.jsonl"
    tasks = [json.loads(line) for line in path.read_text().splitlines()]
    conversations = read_conversations([path])
    assert len(conversations) == sum(len(t["instances"]) for t in tasks) == 175
    assert conversations[0].messages[1]["content"] == tasks[0]["instances"][0]["output"]


def test_chat_and_prompt_completion_jsonl(tmp_path):
    chat = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
    ]
    chats = jsonl(tmp_path / "chat.jsonl", [{"messages": chat}])
    pairs = jsonl(tmp_path / "pairs.jsonl", [{"prompt": "2+2?", "completion": "4"}])
    zipped = tmp_path / "pairs.jsonl.gz"
    zipped.write_bytes(gzip.compress(pairs.read_bytes()))
    got = read_conversations([chats, pairs, zipped])
    assert [c.messages for c in got] == [
        chat,
        [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
        [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
    ]


GOOD = {"instruction": "Say yes.", "input": "", "output": "Yes."}
BAD_FILES = {
    "missing field": ([GOOD, {"instruction": "Say no."}], ["line 2", "missing field 'output'"]),
    "wrong type": ([GOOD, {"instruction": "Count.", "output": 3}], ["line 2", "'output' must be text"]),
    "not an object": ([GOOD, ["a", "list"]], ["line 2", "expected a JSON object"]),
    "bad role": ([{"messages": [{"role": "robot", "content": "hi"}]}], ["line 1", "needs a role"]),
    "no reply": ([{"messages": [{"role": "user", "content": "hi"}]}], ["line 1", "no assistant message"]),
    "unknown records": ([{"text": "plain"}], ["line 1", "not an instruction record"]),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_malformed_records_are_one_line_naming_file_and_record(case, base_model, tmp_path, cli):
    records, fragments = BAD_FILES[case]
    path = jsonl(tmp_path / "data.jsonl", records)
    result = cli(*finetune_args(base_model, [path], tmp_path / "out"))
    assert_user_error(result, str(path), *fragments)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "content, fragments",
    [
        (b"", ["holds no examples"]),
        (b"\n\n", ["holds no examples"]),
        (b'{"instruction": "caf\xe9", "output": "x"}\n', ["not valid UTF-8", "byte 0xe9"]),
        (b'{"instruction": "a", "output": "b"}\n{"instruction": \n', ["line 2 is not valid JSON"]),
        (b'[{"instruction": "a", "output": "b"},', ["is not valid JSON"]),
        (gzip.compress(b'{"instruction": "a", "output": "b"}\n')[:-6], ["cannot be read"]),
    ],
    ids=["empty", "blank lines", "latin-1", "broken jsonl", "broken json", "truncated gzip"],
)
def test_unreadable_files_are_one_line_and_nothing_is_written(content, fragments, base_model, tmp_path, cli):
    path = tmp_path / "data.json"
    path.write_bytes(content)
    result = cli(*finetune_args(base_model, [path], tmp_path / "out"))
    assert_user_error(result, str(path), *fragments)
    assert not (tmp_path / "out").exists()


def test_a_template_that_fails_to_render_is_one_line(base_model, tmp_path, cli, alpaca):
    data = tmp_path / "data.json"
    data.write_text(json.dumps(alpaca[:20]))
    broken = tmp_path / "broken.jinja"
    broken.write_text("{% for message in messages %}{{ message['content'] }")
    result = cli(*finetune_args(base_model, [data], tmp_path / "out", data__template=broken))
    assert_user_error(result, "chat template", "failed to render")
    assert not (tmp_path / "out").exists()


def test_a_conversation_the_template_refuses_names_its_record(base_model, tmp_path, cli, alpaca):
    turns = [
        {"role": "user", "content": "a"},
        {"role": "user", "content": "b"},
        {"role": "assistant", "content": "c"},
    ]
    good = [
        {
            "messages": [
                {"role": "user", "content": r["instruction"]},
                {"role": "assistant", "content": r["output"]},
            ]
        }
        for r in alpaca[:20]
    ]
    path = jsonl(tmp_path / "chat.jsonl", [*good, {"messages": turns}])
    result = cli(*finetune_args(base_model, [path], tmp_path / "out"))
    assert_user_error(result, f"{path} line 21", "roles must alternate")
    assert not (tmp_path / "out").exists()
