"""TRL's DPO data path takes Rankforge's conversational pairs with tool calls as they are exported: the history,
the continuation's tool calls and results, and the tools column reach the tokenized text."""

import json

from app.datasets.formats import JudgedComparison, JudgmentVote, export_rows
from app.imports.messages import CONTINUATION_KEY
from app.imports.parsers import parse_import
from tests.imports.test_conversations import openai_line

TOOL_CHAT_TEMPLATE = (
    "{% if tools %}{{ '<|system|>\\ntools: ' + (tools | map(attribute='function') | map(attribute='name') | join(','))"
    " + eos_token + '\\n' }}{% endif %}"
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' }}"
    "{% if message['tool_calls'] %}{% for call in message['tool_calls'] %}"
    "{{ 'call ' + call['function']['name'] + ' ' + (call['function']['arguments'] | tojson) + '\\n' }}"
    "{% endfor %}{% endif %}{{ message['content'] + eos_token + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)
"""The tiny tokenizer's template, extended as real ones are (transformers' convention): tools listed, tool calls
rendered with their arguments as JSON."""


def exported_rows() -> list[dict]:
    lines = [json.dumps(openai_line(city, answer)) for city, answer in (("Paris", "18 C in Paris"), ("Lyon", "mild"))]
    [record] = parse_import("\n".join(lines).encode(), "openai-chat")
    comparison = JudgedComparison(
        comparison_id=1, prompt_id=1, prompt=record.prompt,
        completions={10: (record.completions[0]["text"], None), 11: (record.completions[1]["text"], None)},
        continuations={10: record.completions[0]["metadata"][CONTINUATION_KEY],
                       11: record.completions[1]["metadata"][CONTINUATION_KEY]},
        tools=record.metadata["tools"], judgments=[JudgmentVote(rater_id=1, ranking=[[10], [11]])],
    )  # fmt: skip
    return [row for _, row in export_rows([comparison], "pairs", conversational=True, test_fraction=0.0)]


def test_trl_dpo_tokenizes_conversational_pairs_with_tool_calls(tmp_path):
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer
    from trl.data_utils import is_conversational

    from trainer.tiny import build_tiny_policy, train_tokenizer

    torch.set_num_threads(1)
    rows = exported_rows() * 2
    assert is_conversational(rows[0])
    # The JSONL an export writes, read back as a trainer reads it.
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    train = datasets.load_dataset("json", data_files=str(path))["train"]
    texts = [m["content"] for row in rows for m in [*row["prompt"], *row["chosen"], *row["rejected"]]]
    tokenizer = train_tokenizer(texts + ["call get_weather city Paris Lyon tools"], vocab_size=512)
    tokenizer.chat_template = TOOL_CHAT_TEMPLATE
    policy_dir = build_tiny_policy(tmp_path / "policy", tokenizer)
    processing = AutoTokenizer.from_pretrained(policy_dir)
    processing.chat_template = TOOL_CHAT_TEMPLATE
    dpo = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(policy_dir),
        args=DPOConfig(output_dir=str(tmp_path / "dpo"), max_steps=1, per_device_train_batch_size=2, max_length=256,
                       report_to="none", save_strategy="no", use_cpu=True, dataloader_num_workers=0,
                       activation_checkpointing=False, gradient_checkpointing=None),
        train_dataset=train,
        processing_class=processing,
    )  # fmt: skip
    example = dpo.train_dataset[0]
    id_columns = {name for name in example if name.endswith("input_ids") or name.endswith("_ids")}
    decoded = {name: processing.decode(example[name]) for name in id_columns}
    everything = " ".join(decoded.values())
    assert "tools: get_weather" in everything, decoded  # the tools column reached the template
    assert "What's the weather in Paris?" in everything  # the whole history
    assert 'call get_weather {"city": "Paris"}' in everything  # the chosen continuation's tool call, arguments kept
    assert 'call get_weather {"city": "Lyon"}' in everything  # and the rejected one's
    assert "18 C in Paris" in everything
    result = dpo.train()
    assert result.global_step == 1 and torch.isfinite(torch.tensor(result.training_loss))
