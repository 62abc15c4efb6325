"""Issue 24 proof, export side: a conversational pairs snapshot with tool calls (written as exports write it) read by
the trainer's own DPO path (trainer.data.read_training_rows, trainer.dpo.encoded_pairs): the history, the tool call
with its arguments and the answers reach the token ids."""

from app.datasets.snapshot_files import SnapshotWriter
from tests.trainer.test_conversation_pairs import TOOL_CHAT_TEMPLATE, exported_rows


def test_the_trainers_dpo_path_reads_a_conversational_pairs_snapshot_with_tool_calls(tmp_path):
    from trainer.data import read_training_rows
    from trainer.dpo import encoded_pairs
    from trainer.tiny import train_tokenizer

    rows = exported_rows()
    with SnapshotWriter(tmp_path / "snap") as writer:
        for row in rows:
            writer.write("train", row)
        writer.finish({"format": "pairs"})
    read = read_training_rows(tmp_path / "snap")
    assert len(read) == len(rows) == 1
    texts = [m["content"] for row in read for m in [*row["prompt"], *row["chosen"], *row["rejected"]]]
    tokenizer = train_tokenizer(texts + ["call get_weather city Paris Lyon"], vocab_size=512)
    tokenizer.chat_template = TOOL_CHAT_TEMPLATE
    [encoded], fit = encoded_pairs(read, tokenizer, 512)
    assert fit.dropped == 0
    prompt = tokenizer.decode(encoded["prompt_ids"])
    chosen, rejected = tokenizer.decode(encoded["chosen_ids"]), tokenizer.decode(encoded["rejected_ids"])
    assert read[0]["prompt"][-1]["content"] in prompt  # the history up to the compared turn
    assert 'call get_weather {"city": "Paris"}' in chosen and "18 C in Paris" in chosen
    assert "mild" in rejected
