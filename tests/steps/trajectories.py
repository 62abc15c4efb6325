"""Agent trajectories for step-label tests: OpenAI chat lines whose continuation is tool-calling steps."""

from __future__ import annotations

import json


def trajectory_line(name: str, n_steps: int = 3, question: str | None = None) -> dict:
    """A user question, then n_steps - 1 tool-calling steps (each with its result), then a final answer step."""
    messages = [{"role": "system", "content": "You are an agent."},
                {"role": "user", "content": f"Find the weather for trip {question or name} <b>now</b>."}]  # fmt: skip
    for i in range(n_steps - 1):
        call_id = f"call_{name}_{i}"
        messages.append({"role": "assistant", "content": f"Step {i} of {name}: I will look it up.",
                         "tool_calls": [{"id": call_id, "type": "function", "function": {
                             "name": "get_weather", "arguments": json.dumps({"city": f"City{i}"})}}]})  # fmt: skip
        messages.append({"role": "tool", "tool_call_id": call_id, "content": json.dumps({"temp_c": 10 + i})})
    messages.append({"role": "assistant", "content": f"Final answer for {name}: mild."})
    return {"messages": messages, "model": "agent-1"}


def trajectory_file(questions, n_steps: int = 3) -> bytes:
    """Two trajectories per question (an import makes a comparison of continuations of one history): names
    "<question>" and "<question>2"."""
    lines = [trajectory_line(name, n_steps, question) for question in questions for name in (question, question + "2")]
    return ("\n".join(json.dumps(line) for line in lines) + "\n").encode()
