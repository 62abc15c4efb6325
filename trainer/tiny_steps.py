"""A synthetic agent task with one planted bad step: for process reward model tests and bench/steps.py.

A user asks for a trip plan to one city; the agent calls 3 to 6 tools, each with that city as its argument
(``get_weather({"city": "Paris"})``), each answered by a tool result, then writes a final answer. In a "bad"
trajectory one tool call, at a random position, has a wrong argument: another city. A PRM has to compare each call's
argument with the request: a tiny model trained from scratch on a few hundred noisily labelled trajectories does
not learn that reliably, one first pretrained on a self-correcting agent's logs does (bench/steps.py, README).

    trajectory(rng, bad) -> {"prompt": [user message], "continuation": [messages], "bad_step": index | None}
    trajectory(rng, bad, correcting=True) -> the same, the wrong call followed by the agent's CORRECTION step
    stepwise_row(traj, labels=None) -> TRL stepwise row {prompt, completions, labels} ended at the first bad label
    planted_stepwise(n, seed, rater_accuracy=1.0, failing=False) -> stepwise rows (labels flipped with 1 - rater_accuracy)
    openai_line(traj) -> one line of the OpenAI chat import format (messages with tool_calls)
"""

from __future__ import annotations

import json
import random
from typing import Any

CITIES = ["Paris", "Rome", "Oslo", "Lima", "Cairo", "Tokyo", "Quito", "Dakar", "Hanoi", "Perth", "Bern", "Riga"]
TOOLS = [
    ("get_weather", "city", "{city}: {x} degrees, {sky}"),
    ("find_hotels", "city", "3 hotels in {city}, from {x} euros"),
    ("list_events", "city", "{x} events in {city} this week"),
    ("get_time", "city", "it is {x}:00 in {city}"),
    ("search_flights", "destination", "{x} flights to {city} tomorrow"),
    ("find_restaurants", "city", "{x} restaurants open in {city}"),
]
SKIES = ["sunny", "cloudy", "rain", "windy", "snow"]
CORRECTION = "wrong city, retry"
"""What a self-correcting agent (trajectory(correcting=True)) says in the step after a wrong call."""


def trajectory(rng: random.Random, bad: bool, *, city: str | None = None, plan: int | None = None,
               min_steps: int = 3, max_steps: int = 6, failing: bool = False,
               correcting: bool = False) -> dict[str, Any]:  # fmt: skip
    """One trip-planning trajectory to `city` (random when None); `bad`: one tool call (not the final answer) at a
    random position has another city as its argument, answered by a plausible result for that city (a PRM must
    compare the argument with the request) or, `failing`, by a tool error (a cue inside the step: an easier task).
    `plan` numbers the final answer (tells trajectories of one request apart). `correcting`: the agent notices its
    wrong call: the step after it says CORRECTION and repeats the call with the request's city (the logs of a
    self-correcting agent: unlabelled text in which noticing a wrong call is part of predicting the next words)."""
    city = city or rng.choice(CITIES)
    n_calls = rng.randint(min_steps, max_steps)
    bad_step = rng.randrange(n_calls) if bad else None
    prompt = [{"role": "user", "content": f"Plan my trip to {city}: check what I need before I go."}]
    messages: list[dict[str, Any]] = []
    for index, (name, argument, result) in enumerate(rng.sample(TOOLS, n_calls)):
        used = rng.choice([c for c in CITIES if c != city]) if index == bad_step else city
        call_id = f"call_{index}"
        messages.append({"role": "assistant", "content": "", "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": {argument: used}}}]})  # fmt: skip
        text = result.format(city=used, x=rng.randint(2, 30), sky=rng.choice(SKIES))
        if failing and index == bad_step:
            text = f"error: {name} failed for {used}"
        messages.append({"role": "tool", "tool_call_id": call_id, "content": text})
        if correcting and index == bad_step:
            retry_id = f"call_{index}_retry"
            messages.append({"role": "assistant", "content": CORRECTION, "tool_calls": [
                {"id": retry_id, "type": "function", "function": {"name": name, "arguments": {argument: city}}}]})  # fmt: skip
            messages.append({"role": "tool", "tool_call_id": retry_id,
                             "content": result.format(city=city, x=rng.randint(2, 30), sky=rng.choice(SKIES))})
    messages.append({"role": "assistant", "content": f"Your trip to {city} is planned"
                     + (f" (plan {plan})." if plan is not None else ".")})
    return {"prompt": prompt, "continuation": messages, "bad_step": bad_step}


def steps_of(traj: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """The trajectory's steps: each assistant message with the tool results that follow it."""
    steps: list[list[dict[str, Any]]] = []
    for message in traj["continuation"]:
        if message["role"] == "tool" and steps:
            steps[-1].append(message)
        else:
            steps.append([message])
    return steps


def true_labels(traj: dict[str, Any]) -> list[bool]:
    return [index != traj["bad_step"] for index in range(len(steps_of(traj)))]


def stepwise_row(traj: dict[str, Any], labels: list[bool] | None = None) -> dict[str, Any]:
    """TRL's stepwise shape, as the app's stepwise export writes it: the prompt as text, each step as text, and the
    labels up to the first bad one (the steps after it are cut)."""
    from trainer.prm import step_text

    labels = true_labels(traj) if labels is None else labels
    end = next((i for i, good in enumerate(labels) if not good), len(labels) - 1)
    steps = [step_text(step) for step in steps_of(traj)][: end + 1]
    return {"prompt": traj["prompt"][0]["content"], "completions": steps, "labels": list(labels[: end + 1])}


def rater_labels(traj: dict[str, Any], rng: random.Random, accuracy: float) -> list[bool]:
    """A simulated rater: each step's true label, flipped with probability 1 - accuracy."""
    return [good if rng.random() < accuracy else not good for good in true_labels(traj)]


def planted_stepwise(n: int, seed: int = 0, *, rater_accuracy: float = 1.0, failing: bool = False) -> list[dict[str, Any]]:
    """n stepwise rows, half of them with a planted bad step, labelled by a rater right with rater_accuracy."""
    rng = random.Random(seed)
    rows = []
    for index in range(n):
        traj = trajectory(rng, bad=index % 2 == 1, failing=failing)
        labels = rater_labels(traj, rng, rater_accuracy) if rater_accuracy < 1 else None
        rows.append(stepwise_row(traj, labels))
    rng.shuffle(rows)
    return rows


def openai_line(traj: dict[str, Any], model: str = "agent") -> str:
    """The trajectory as one line of the OpenAI chat import format: the messages, tool-call arguments as JSON
    strings (as the OpenAI API writes them)."""
    messages = []
    for message in traj["prompt"] + traj["continuation"]:
        message = dict(message)
        if message.get("tool_calls"):
            message["tool_calls"] = [
                {**call, "function": {**call["function"], "arguments": json.dumps(call["function"]["arguments"])}}
                for call in message["tool_calls"]
            ]
        messages.append(message)
    return json.dumps({"messages": messages, "model": model})


def texts(rows: list[dict[str, Any]]) -> list[str]:
    """Every string of stepwise rows: tokenizer training texts."""
    return [row["prompt"] for row in rows] + [step for row in rows for step in row["completions"]]
