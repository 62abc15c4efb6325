"""Turn-level KTO rows (issue 24, point 4): a conversation judged at two turns gives KTO rows whose prompt is the whole
history up to each judged turn and whose completion is that turn's assistant messages (tool calls and results kept),
with `turn` and `conversation`; the same rows in JSONL, Parquet and the hf/ directory; the trainer's KTO path reads
and tokenizes them (history, tool call and answer reach the token ids)."""

import json

import pyarrow.parquet as pq

from app.datasets.formats import JudgedComparison, JudgmentVote, arrow_schema, export_rows
from app.datasets.snapshot_files import SnapshotWriter
from app.imports.messages import CONTINUATION_KEY
from app.imports.parsers import parse_import
from tests.imports.test_conversations import HISTORY, WEATHER_TOOL, openai_line


def judged(record, comparison_id: int, prompt_id: int, first_id: int) -> JudgedComparison:
    ids = [first_id, first_id + 1]
    return JudgedComparison(
        comparison_id=comparison_id, prompt_id=prompt_id, prompt=record.prompt,
        completions={i: (c["text"], c.get("model")) for i, c in zip(ids, record.completions, strict=True)},
        continuations={i: c["metadata"][CONTINUATION_KEY] for i, c in zip(ids, record.completions, strict=True)
                       if CONTINUATION_KEY in c["metadata"]},
        tools=record.metadata.get("tools"), judgments=[JudgmentVote(rater_id=1, ranking=[[ids[0]], [ids[1]]])],
    )  # fmt: skip


def two_turns() -> list[JudgedComparison]:
    """Turn 0 (plain answers to "Hi") and turn 1 (the weather question, answered with a tool call or without)."""
    opening = HISTORY[:2]
    turn0 = [{"messages": [*opening, {"role": "assistant", "content": answer}]} for answer in ("Hello!", "Go away.")]
    [first] = parse_import("".join(json.dumps(row) + "\n" for row in turn0).encode(), "openai-chat")
    lines = [json.dumps(openai_line("Paris", "18 °C in Paris.")),
             json.dumps({"messages": [*HISTORY, {"role": "assistant", "content": "No idea."}], "tools": [WEATHER_TOOL]})]
    [second] = parse_import("\n".join(lines).encode(), "openai-chat")
    return [judged(first, 1, 1, 10), judged(second, 2, 2, 20)]


def rows() -> list[dict]:
    return [row for _, row in export_rows(two_turns(), "kto", conversational=True)]


def test_kto_rows_of_a_conversation_are_turn_level():
    exported = rows()
    by_turn = {(row["turn"], row["label"]): row for row in exported}
    assert sorted(by_turn) == [(0, False), (0, True), (1, False), (1, True)]
    assert len({row["conversation"] for row in exported}) == 1  # both turns: one conversation
    good = by_turn[(1, True)]
    assert good["prompt"] == HISTORY  # the whole history up to the judged turn
    assert good["completion"][0]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": {"city": "Paris"}}
    assert good["completion"][-1] == {"role": "assistant", "content": "18 °C in Paris."}
    assert json.loads(good["tools"]) == [WEATHER_TOOL]
    assert by_turn[(0, True)]["prompt"] == HISTORY[:2] and by_turn[(0, True)]["tools"] is None
    standard = two_turns()[0]
    standard.prompt = "Hi"
    plain = [row for _, row in export_rows([standard], "kto", conversational=False)]
    assert "turn" not in plain[0]  # standard (string) rows keep the kto columns they had


def test_turn_level_kto_rows_are_the_same_in_jsonl_parquet_and_hf(tmp_path):
    import datasets

    exported = rows()
    plain = [row for row in exported if row["turn"] == 0]
    assert sorted(arrow_schema("kto", conversational=True).names) == sorted(plain[0])  # the fixed schema fits
    with SnapshotWriter(tmp_path / "snap", hf_datasets=True) as writer:  # rows with tool calls: inferred columns
        for row in exported:
            writer.write("train", row)
        writer.finish()
    jsonl = [json.loads(line) for line in (tmp_path / "snap" / "train.jsonl").read_text().splitlines()]
    parquet = pq.read_table(tmp_path / "snap" / "train.parquet").to_pylist()
    hf = datasets.load_from_disk(str(tmp_path / "snap" / "hf"))["train"].to_list()
    for loaded in (parquet, hf):
        assert [(r["turn"], r["label"], r["conversation"]) for r in loaded] == [
            (r["turn"], r["label"], r["conversation"]) for r in jsonl]  # fmt: skip
        tool_row = next(r for r in loaded if r["turn"] == 1 and r["label"])
        assert tool_row["completion"][0]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
        assert [m["content"] for m in tool_row["prompt"]] == [m["content"] for m in HISTORY]


def test_the_trainers_kto_path_tokenizes_turn_level_rows_with_history_and_tool_calls(tmp_path):
    from tests.trainer.test_conversation_pairs import TOOL_CHAT_TEMPLATE
    from trainer.encoding import encode_rows
    from trainer.kto import KTO_COLUMNS
    from trainer.tiny import train_tokenizer

    exported = [{column: row[column] for column in KTO_COLUMNS} for row in rows()]  # what trainer.kto.kto_rows keeps
    texts = [m["content"] for row in exported for m in [*row["prompt"], *row["completion"]]]
    tokenizer = train_tokenizer(texts + ["call get_weather city Paris"], vocab_size=512)
    tokenizer.chat_template = TOOL_CHAT_TEMPLATE
    encoded, fit = encode_rows(exported, tokenizer, 512, ("completion",))
    assert fit.dropped == 0 and len(encoded) == 4
    tool_row = next(e for e, r in zip(encoded, exported, strict=True) if r["label"] and len(r["prompt"]) > 2)
    prompt, completion = tokenizer.decode(tool_row["prompt_ids"]), tokenizer.decode(tool_row["completion_ids"])
    assert "What's the weather in Paris?" in prompt and "Hello! How can I help?" in prompt  # the whole history
    assert 'call get_weather {"city": "Paris"}' in completion and "18 °C in Paris." in completion
