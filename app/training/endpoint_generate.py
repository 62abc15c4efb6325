"""A `generate` job whose policy is an endpoint: the worker process asks the server over HTTP (no trainer child,
no torch) and stores what comes back exactly as a local generate job's output (completions and comparisons,
app.imports.service.add_generations), so rounds, scoring and exports do not care where a completion came from.

- Every (prompt, completion index) is one request, at most the endpoint's max_concurrency at once, its requests
  per minute, retried as app.registry.endpoint_client says (429 + Retry-After, 5xx, timeouts, broken answers).
- A prompt whose request fails for good is recorded with its reason (result `failed_prompts`); the rest go on. Only
  a job where every request failed fails.
- Idempotent: each answer is appended to the job's answers.jsonl as it arrives; a restarted job (worker crash,
  retry) reads it and asks only for what is missing.
- Token usage of each answer is kept on the completion (meta.usage) and summed, with the cost where the endpoint
  has prices, into the job's metrics.
- Conversations with tools: the prompt's whole history goes as OpenAI messages (`messages_of`: tool calls, tool
  results with their tool_call_id) and the tools it was offered (the prompt's metadata.tools) as the request's
  `tools`. An answer that calls tools (message.tool_calls) or keeps its thinking apart (reasoning_content) is stored
  as a continuation of one assistant message (`answer_messages`), in the completion's metadata.messages as an
  imported conversation's is (app.imports.messages); a tool call that is not valid there (arguments that are not a
  JSON object) fails that request with its reason, never stored half-read.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

from sqlalchemy import select

from app.db import session_scope
from app.errors import JobFailed
from app.imports.messages import MessageError, check_message, request_tools
from app.imports.service import add_generations
from app.jobs.runner import JobContext
from app.limits import clean_model_output
from app.models import Job, JobKind, ModelVersion, Project, Prompt
from app.registry.endpoint_client import Answer, Cancelled, EndpointClient, EndpointFailure
from app.registry.endpoints import check_address, endpoint_config, is_endpoint
from app.training.kinds import DEFAULTS, split_params

ANSWERS = "answers.jsonl"
FINISH_REASONS = {"stop": "eos", "eos": "eos", "length": "length"}
"""OpenAI finish reasons in the names local generation writes (eos: the model ended it; length: cut)."""
REPORTED_FAILURES = 100


def request_params(endpoint_sampling: dict, trainer_params: dict) -> dict:
    """The sampling of each request: the generate kind's defaults, then the endpoint's own defaults, then what the
    job set explicitly (OpenAI names: max_new_tokens is max_tokens)."""
    defaults = DEFAULTS[JobKind.generate]
    params = {"temperature": defaults["temperature"], "top_p": defaults["top_p"],
              "max_tokens": defaults["max_new_tokens"]} | dict(endpoint_sampling)  # fmt: skip
    for name in ("temperature", "top_p"):
        if name in trainer_params:
            params[name] = trainer_params[name]
    if "max_new_tokens" in trainer_params:
        params["max_tokens"] = trainer_params["max_new_tokens"]
    if trainer_params.get("top_k"):
        params["top_k"] = trainer_params["top_k"]
    return params


def messages_of(prompt) -> list[dict]:
    """A prompt as OpenAI chat messages (a plain prompt is one user message). A conversation goes whole, so the
    endpoint continues it: an assistant's tool calls (arguments as the JSON string the API takes), a tool result's
    tool_call_id and name; reasoning stays out (chat APIs take no reasoning in their input)."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    messages = []
    for m in prompt:
        message = {"role": m.get("role", "user"), "content": m.get("content", "")}
        if m.get("tool_calls"):
            message["tool_calls"] = [
                {"id": call.get("id", f"call_{index}"), "type": "function",
                 "function": {"name": call["function"]["name"], "arguments": _arguments(call["function"])}}
                for index, call in enumerate(m["tool_calls"])
            ]  # fmt: skip
            message["content"] = message["content"] or None  # OpenAI's shape of a turn that only calls tools
        for key in ("tool_call_id", "name"):
            if m.get(key):
                message[key] = m[key]
        messages.append(message)
    return messages


def prompt_tools(db, prompt_ids) -> dict[int, list[dict]]:
    """The request `tools` of each prompt that offers some."""
    rows = db.execute(select(Prompt.id, Prompt.meta).where(Prompt.id.in_(list(prompt_ids)))).all()
    tools = {pid: request_tools((meta or {}).get("tools") if isinstance(meta, dict) else None) for pid, meta in rows}
    return {pid: t for pid, t in tools.items() if t}


def answer_messages(answer: Answer) -> list[dict] | None:
    """The answer as a continuation in Rankforge's message shape (one assistant message: its text, tool calls with
    their arguments parsed, reasoning), or None for a plain answer (its text is all there is). MessageError: a tool
    call the shape refuses."""
    if not answer.tool_calls and not answer.reasoning:
        return None
    message = {"role": "assistant", "content": answer.text, "tool_calls": answer.tool_calls or None,
               "reasoning": answer.reasoning}  # fmt: skip
    return [check_message(clean_model_output(message), "answer")]


def _arguments(function: dict) -> str:
    arguments = function.get("arguments", {})
    return arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False, sort_keys=True)


def read_answers(path: Path) -> dict[tuple[int, int], dict]:
    """Answers an earlier attempt stored, by (prompt_id, index); a torn last line (a crash mid-write) is skipped."""
    done: dict[tuple[int, int], dict] = {}
    if not path.is_file():
        return done
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                row = json.loads(line)
                done[(int(row["prompt_id"]), int(row["index"]))] = row
            except (ValueError, KeyError, TypeError):
                continue
    return done


def run_endpoint_generation(ctx: JobContext, work: Path, prompts_path: Path) -> dict:
    """Generate for the prompts in prompts_path (written by the caller, as for a local job) and store the
    completions; the job's result."""
    with session_scope() as db:
        job = db.get(Job, ctx.job_id)
        version = db.get(ModelVersion, job.base_model_id)
        config = endpoint_config(db, version)
        _app_params, trainer_params = split_params(job.params)
        arena = bool(job.params.get("arena"))
    if trainer_params.get("reference_model"):
        raise JobFailed("reference_model (the KL estimate) needs the policy's log-probabilities of its own tokens: "
                        "run it on a local version, not an endpoint.")  # fmt: skip
    check_address(config.base_url)
    n = int(trainer_params.get("num_completions", DEFAULTS[JobKind.generate]["num_completions"]))
    params = request_params(config.sampling, trainer_params)
    with open(prompts_path, encoding="utf-8") as handle:
        prompts = {int(row["prompt_id"]): row["prompt"] for row in map(json.loads, handle) if row}
    with session_scope() as db:
        tools = prompt_tools(db, prompts)
    answers_path = work / ANSWERS
    done = read_answers(answers_path)
    asks = [(p, i) for p in prompts for i in range(n) if (p, i) not in done]
    total = len(prompts) * n
    if done:
        ctx.log(f"{len(done)} answers stored by an earlier attempt; asking for the {len(asks)} missing.\n")
    ctx.progress(len(done) / max(total, 1) * 0.95, f"asking {config.name} for {len(asks)} completions")

    failures: dict[int, str] = {}
    lock = threading.Lock()
    started = time.monotonic()
    stats = {"requests": 0, "attempts": 0, "failed_requests": 0}

    with EndpointClient(config, cancel=ctx.cancel_event) as client, open(answers_path, "a", encoding="utf-8") as out:

        def failed(prompt_id: int, reason: str, attempts: int) -> None:
            with lock:
                failures.setdefault(prompt_id, reason)
                stats["attempts"] += attempts
                stats["failed_requests"] += 1

        def ask(prompt_id: int, index: int) -> None:
            asked = params | ({"tools": tools[prompt_id]} if prompt_id in tools else {})
            try:
                answer = client.chat(messages_of(prompts[prompt_id]), asked)
                continuation = answer_messages(answer)
            except EndpointFailure as failure:
                failed(prompt_id, failure.reason, failure.attempts)
                return
            except MessageError as error:  # the model's own output: asking again is a new sample, not a retry
                failed(prompt_id, f"an answer Rankforge cannot store: {error}", answer.attempts)
                return
            row = {"prompt_id": prompt_id, "index": index, "text": answer.text, "finish_reason": answer.finish_reason,
                   "usage": answer.usage, "attempts": answer.attempts}  # fmt: skip
            if continuation:
                row["messages"] = continuation
            with lock:  # written as it arrives: a crash loses no answer a restart would pay for again
                out.write(json.dumps(row) + "\n")
                out.flush()
                done[(prompt_id, index)] = row
                stats["requests"] += 1
                stats["attempts"] += answer.attempts

        workers = max(1, min(config.max_concurrency, len(asks) or 1))
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"endpoint-{ctx.job_id}")
        try:
            pending = {pool.submit(ask, p, i) for p, i in asks}
            every = max(1, len(asks) // 20)
            finished = 0
            while pending:
                finished_now, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                for future in finished_now:
                    future.result()
                before, finished = finished, finished + len(finished_now)
                if finished // every != before // every or not pending:
                    ctx.progress(min(len(done) / max(total, 1), 1.0) * 0.95,
                                 f"{len(done)}/{total} completions, {len(failures)} prompts failed")  # fmt: skip
        except Cancelled:
            ctx.check_cancelled()
            raise
        except BaseException:
            ctx.cancel_event.set()  # the requests still waiting give up; the ones answered are on disk
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    elapsed = time.monotonic() - started

    rows, failed_prompts = [], []
    for prompt_id in prompts:
        got = [done[(prompt_id, i)] for i in range(n) if (prompt_id, i) in done]
        if len(got) < n:
            failed_prompts.append({"prompt_id": prompt_id, "reason": failures.get(prompt_id, "not answered"),
                                   "answered": len(got), "wanted": n})  # fmt: skip
        if got:
            rows.append({"prompt_id": prompt_id, "completions": [
                {"text": a["text"], "finish_reason": FINISH_REASONS.get(a.get("finish_reason"), a.get("finish_reason")),
                 "usage": a.get("usage"), "messages": a.get("messages"),
                 "params": params | {"endpoint": config.name, "model": config.model}} for a in got]})  # fmt: skip
    if not rows:
        reason = failed_prompts[0]["reason"] if failed_prompts else "no prompts"
        raise JobFailed(f"The endpoint {config.name} answered no prompt: {reason}")
    answers = [a for a in done.values() if a["prompt_id"] in prompts]
    usages = [a.get("usage") or {} for a in answers]
    prompt_tokens = sum(u.get("prompt_tokens") or 0 for u in usages)
    completion_tokens = sum(u.get("completion_tokens") or 0 for u in usages)
    costs = [config.cost(u) for u in usages if u]
    metrics = {
        "generate/prompts": len(prompts), "generate/completions": len(answers),
        "generate/failed_prompts": len(failed_prompts),
        "generate/eos_share": sum(FINISH_REASONS.get(a.get("finish_reason")) == "eos" for a in answers) / len(answers),
        "generate/prompt_tokens": prompt_tokens, "generate/completion_tokens": completion_tokens,
        "generate/answers_without_usage": sum(1 for u in usages if not u),
        "generate/runtime_s": round(elapsed, 3),
        "generate/requests_per_s": round(stats["requests"] / max(elapsed, 1e-9), 3),
        "generate/tokens_per_s": round(completion_tokens / max(elapsed, 1e-9), 1) if stats["requests"] else None,
        "generate/retries": stats["attempts"] - stats["requests"] - stats["failed_requests"],
        "generate/failed_requests": stats["failed_requests"],
        "generate/backend": "endpoint",
    }  # fmt: skip
    if any(c is not None for c in costs):
        metrics["generate/cost"] = round(sum(c or 0.0 for c in costs), 6)
    ctx.metrics(1, {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    with session_scope(write=True) as db:
        job = db.get(Job, ctx.job_id)
        if job.result and "completion_ids" in job.result:  # stored by an attempt that died before finishing
            stored = {k: job.result[k] for k in ("completion_ids", "comparison_ids")}
        else:
            stored = add_generations(db, db.get(Project, job.project_id), db.get(ModelVersion, job.base_model_id),
                                     rows, job_id=job.id, arena=arena)  # fmt: skip
        result = {"metrics": metrics, "dataset_id": None} | stored | {
            "failed_prompts": failed_prompts[:REPORTED_FAILURES]}  # fmt: skip
        job.result = result
    return result


def run_generate_job(ctx: JobContext) -> dict:
    """The worker's handler of `generate`: a policy that is an endpoint is asked over HTTP here; a local one is
    sampled by the trainer child (app.training.handlers.run_training_job)."""
    from app.training.handlers import job_dir, run_training_job, write_prompts

    with session_scope() as db:
        job = db.get(Job, ctx.job_id)
        version = db.get(ModelVersion, job.base_model_id) if job.base_model_id else None
        if version is None or not is_endpoint(db, version):
            served = False
        else:
            served = True
            app_params, _ = split_params(job.params)
            work = job_dir(job.id)
            work.mkdir(parents=True, exist_ok=True)
            prompts_path = work / "prompts.jsonl"
            write_prompts(db, db.get(Project, job.project_id), prompts_path, app_params.get("max_prompts"),
                          app_params.get("prompt_ids"))  # fmt: skip
    if not served:
        return run_training_job(ctx)
    return run_endpoint_generation(ctx, work, prompts_path)
