"""Rounds and judges on conversations, local side (issue 24, point 5): a round's local generate job gets the whole
conversation (write_prompts keeps tool calls and results) and the policy continues it (the chat template renders
the history, tool calls included, with the assistant turn opened); a local judge's inputs carry each continuation
and its question reads the history and the responses' tool calls (trainer.verdicts, shared with endpoint judges)."""

from __future__ import annotations

import json

from app.imports.parsers import parse_import
from tests.endpoints.test_conversations import CONTINUATIONS, CONVERSATION
from tests.trainer.test_conversation_pairs import TOOL_CHAT_TEMPLATE

WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city.",
                                                  "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


def conversation_record(tools: list | None = None):
    extra = {"tools": tools} if tools else {}
    lines = "".join(json.dumps({"messages": CONVERSATION + c} | extra) + "\n" for c in CONTINUATIONS).encode()
    [record] = parse_import(lines, "openai-chat")
    return record


def stored_project(db, tools: list | None = None):
    from app.imports.service import import_records
    from app.projects.schemas import ProjectCreate
    from app.projects.service import create_project

    project = create_project(db, ProjectCreate(name="conversation rounds"), actor=None)
    import_records(db, project, [conversation_record(tools)])
    db.flush()
    return project


def test_local_generation_continues_the_whole_conversation(db, tmp_path):
    import torch

    from app.training.handlers import write_prompts
    from trainer.generate import generate_completions
    from trainer.params import GenerateArgs
    from trainer.tiny import build_tiny_policy, train_tokenizer

    project = stored_project(db, tools=[WEATHER_TOOL])
    path = tmp_path / "prompts.jsonl"
    assert write_prompts(db, project, path, None) == 1
    [row] = [json.loads(line) for line in path.read_text().splitlines()]
    prompt = row["prompt"]
    assert row["tools"] == [WEATHER_TOOL]  # the tools the conversation offered, for the chat template
    assert [m["role"] for m in prompt] == [m["role"] for m in CONVERSATION]  # the whole history
    assert prompt[4]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": {"city": "Paris"}}

    torch.manual_seed(0)
    texts = [str(m.get("content") or "") for m in CONVERSATION] + ["call get_weather city Paris"]
    tokenizer = train_tokenizer(texts, vocab_size=400)
    tokenizer.chat_template = TOOL_CHAT_TEMPLATE
    from transformers import AutoModelForCausalLM, AutoTokenizer

    policy_dir = build_tiny_policy(tmp_path / "policy", tokenizer)
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    tokenizer.chat_template = TOOL_CHAT_TEMPLATE
    model = AutoModelForCausalLM.from_pretrained(policy_dir)
    args = GenerateArgs(num_completions=1, max_new_tokens=3, temperature=0)
    [[completion]] = generate_completions(model, tokenizer, [prompt], args, [row["tools"]])
    seen = tokenizer.decode(completion["prompt_ids"])
    assert seen.startswith("<|system|>\ntools: get_weather")  # the template was given the offered tools
    [[without]] = generate_completions(model, tokenizer, [prompt], args)
    assert "tools:" not in tokenizer.decode(without["prompt_ids"])
    assert "Hello! How can I help?" in seen  # an earlier turn
    assert 'call get_weather {"city": "Paris"}' in seen  # the history's tool call
    assert "And tomorrow? [conv]" in seen
    assert seen.rstrip().endswith("<|assistant|>")  # generation continues as the assistant's next turn


def test_a_local_judge_reads_the_history_and_the_continuations(db, tmp_path):
    from app.judges.service import write_judge_inputs
    from app.models import Job, Judge
    from trainer.verdicts import _prompt_text, fill_template, response_text

    project = stored_project(db)
    judge = Judge(project_id=project.id, name="local", method="generative", params={})
    db.add(judge)
    db.flush()
    job = Job(project_id=project.id, kind="judge", params={"judge": judge.id, "scope": "open"})
    db.add(job)
    db.flush()
    path = tmp_path / "comparisons.jsonl"
    assert write_judge_inputs(db, job, path) == 1
    [row] = [json.loads(line) for line in path.read_text().splitlines()]
    first, second = row["completions"]
    assert first["messages"][0]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert "messages" not in second  # a plain answer is its text
    question = fill_template("{prompt}\n---\n{response_a}\n---\n{response_b}", guidelines="",
                             prompt=_prompt_text(row["prompt"]), response_a=response_text(first["text"], first.get("messages")),
                             response_b=response_text(second["text"], second.get("messages")))  # fmt: skip
    prompt, a, b = question.split("\n---\n")
    assert prompt.splitlines()[4] == 'assistant: (calls get_weather {"city": "Paris"})'
    assert prompt.splitlines()[5] == 'tool (get_weather): {"temp_c": 18}'
    assert a.splitlines() == ['assistant: (calls get_weather {"city": "Paris", "day": "tomorrow"})',
                              'tool (get_weather): {"temp_c": 21}', "assistant: please expect 21 °C tomorrow."]
    assert b == "No idea."
