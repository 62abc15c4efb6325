"""The `judge` kind: AI verdicts on comparisons, with a confidence, for the app to store as AI judgments.

prompts_path lines: {"comparison_id", "prompt", "completions": [{"completion_id", "text"}], "reference"?,
"guidelines"?}. out_dir/judgments.jsonl gets one line per judged comparison:
    {"comparison_id", "ranking": [[id], [id, id]] (tie groups, best first), "confidence",
     "strengths": {id: log-strength}, "pairs": [[a, b, P(a over b)]], "p_first": [P(first shown wins), ...]}

Methods (params.method):
- reward: a reward model scores each completion; P(a over b) = sigmoid(r_a - r_b); K-way by sorting the scores.
  The reward model sees each completion alone, so it has no position to be biased by (p_first is empty).
- generative: a causal LM reads a pairwise question (params.template with {guidelines}, {prompt}, {response_a},
  {response_b}); the verdict is the next-token probability of the answer labels (params.labels, renormalised over
  the two), never free text. Every pair is asked in both orders and the two answers averaged:
      P(a over b) = (P(first | a, b) + 1 - P(first | b, a)) / 2
  so a judge that always answers "first" gives 0.5 (no preference) and its position bias (the mean probability
  of preferring the first shown, 0.5 for an unbiased judge) is measured and reported. K-way: every pair, then a
  Bradley-Terry fit on the soft pairwise outcomes.
- prm: a process reward model (a `prm` version, trainer/prm.py) scores each response's steps (a continuation's messages:
  one step per assistant message with its tool results; a text: cut at the PRM's separator); its outcome is the
  minimum step score (params.prm_outcome "min": one bad step sinks it) or the last step's ("last"). The higher
  outcome wins: P(a over b) = (1 + o_a - o_b) / 2 (each outcome read as the chance its response is good: a good and
  b bad, plus half of alike), and outcomes within params.tie_margin are a tie (0.5). Like reward, no position to be
  biased by (p_first is empty); each verdict keeps the step scores and outcomes under "prm".
- rules: the prompt's reference rule (trainer.rewards.verifier.check_rule) passes or fails each completion;
  a passing answer beats a failing one with confidence params.rules_confidence; equal outcomes are a tie at 0.5.

confidence: for a strict ranking, the smallest P(higher over lower) between neighbouring completions (for a
pair: max(p, 1 - p)); a ranking with a tie gets 0.5. The app compares it to the project's threshold.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from itertools import combinations
from pathlib import Path
from typing import Any

from trainer import progress
from trainer.params import JudgeArgs
from trainer.spec import JobSpec
from trainer.verdicts import (  # noqa: F401 - the verdict arithmetic, torch-free, shared with the app
    TIE_EPS,
    _prompt_text,
    _sigmoid,
    bradley_terry,
    combine_orders,
    fill_template,
    ranking_from_strengths,
    response_text,
    verdict_from_outcomes,
    verdict_from_pairs,
    verdict_from_scores,
    verdicts_from_orders,
)

# --- the question a generative judge reads ---------------------------------------------------------------------------


def label_token_ids(tokenizer, labels: list[str], chat: bool) -> list[int]:
    """The first token of each answer label as it would follow the question (a leading space without a chat
    template, whose generation prompt ends the line itself)."""
    ids = []
    for label in labels:
        encoded = tokenizer(label if chat else " " + label, add_special_tokens=False)["input_ids"]
        if not encoded:
            raise ValueError(f"answer label {label!r} encodes to no token")
        ids.append(encoded[0])
    if len(set(ids)) != len(ids):
        raise ValueError(f"answer labels {labels} share their first token; pick labels that differ")
    return ids


def question_ids(tokenizer, text: str, max_length: int) -> list[int]:
    chat = bool(getattr(tokenizer, "chat_template", None))
    if chat:
        text = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                             tokenize=False)  # fmt: skip
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    else:
        ids = tokenizer(text)["input_ids"]
    return list(ids)[-max_length:]  # the question is at the end: a long text loses its beginning


def first_label_probs(model, questions: list[list[int]], label_ids: list[int], pad_id: int, batch_size: int) -> list[float]:
    """P(first label) renormalised over the answer labels, from the next-token logits after each question."""
    import torch

    device = next(model.parameters()).device
    out: list[float] = []
    for start in range(0, len(questions), batch_size):
        batch = questions[start : start + batch_size]
        width = max(len(q) for q in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(batch):  # left padding: the last position is every row's next token
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            mask[row, width - len(ids) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                           position_ids=positions.to(device)).logits[:, -1, :]  # fmt: skip
        chosen = torch.log_softmax(logits[:, label_ids].float(), dim=-1)
        out += chosen[:, 0].exp().cpu().tolist()
    return out


def judge_generative(model, tokenizer, rows: list[dict], args: JudgeArgs, report=None) -> list[dict]:
    """Every pair of every row in both orders; a verdict per row with p_first (one value per order asked)."""
    chat = bool(getattr(tokenizer, "chat_template", None))
    labels = list(args.labels)
    if len(labels) != 2:
        raise ValueError(f"a generative judge needs two answer labels, got {labels}")
    label_ids = label_token_ids(tokenizer, labels, chat)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    asks: list[tuple[int, int, int]] = []  # (row index, first shown, second shown)
    questions: list[list[int]] = []
    for r, row in enumerate(rows):
        texts = {c["completion_id"]: response_text(c["text"], c.get("messages")) for c in row["completions"]}
        for a, b in combinations(sorted(texts), 2):
            for first, second in ((a, b), (b, a)) if args.both_orders else ((a, b),):
                text = fill_template(args.template, guidelines=row.get("guidelines") or "",
                                     prompt=_prompt_text(row["prompt"]), response_a=texts[first],
                                     response_b=texts[second])  # fmt: skip
                asks.append((r, first, second))
                questions.append(question_ids(tokenizer, text, args.max_length))
    probs: list[float] = []
    chunk = max(args.batch_size * 4, 1)
    for start in range(0, len(questions), chunk):
        probs += first_label_probs(model, questions[start : start + chunk], label_ids, pad_id, args.batch_size)
        if report:
            report(min(len(questions), start + chunk), len(questions))
    return verdicts_from_orders(rows, asks, probs)


def judge_rules(rows: list[dict], args: JudgeArgs) -> list[dict]:
    from trainer.rewards.verifier import check_rule

    verdicts = []
    for row in rows:
        reference = row.get("reference")
        if isinstance(reference, str):
            reference = json.loads(reference)
        if not isinstance(reference, dict):
            continue  # the rules judge has nothing to say without a reference
        passed = {c["completion_id"]: bool(check_rule(c["text"], reference)["passed"]) for c in row["completions"]}
        ids = sorted(passed)
        high = args.rules_confidence
        pairs = [(a, b, 0.5 if passed[a] == passed[b] else (high if passed[a] else 1 - high))
                 for a, b in combinations(ids, 2)]  # fmt: skip
        strengths = {c: (1.0 if passed[c] else 0.0) for c in ids}
        direct = {(a, b): p for a, b, p in pairs} | {(b, a): 1 - p for a, b, p in pairs}
        ranking, confidence = ranking_from_strengths(strengths, lambda a, b, d=direct: d[(a, b)])
        verdicts.append({"comparison_id": row["comparison_id"], "ranking": ranking, "confidence": confidence,
                         "strengths": strengths, "pairs": [[a, b, p] for a, b, p in pairs], "p_first": [],
                         "passed": {str(c): v for c, v in passed.items()}})  # fmt: skip
    return verdicts


def judge_reward(spec: JobSpec, rows: list[dict], args: JudgeArgs, report=None) -> list[dict]:
    from trainer.encoding import effective_max_length, encode_sequence
    from trainer.models import default_device, load_reward, load_tokenizer, reward_scores

    tokenizer = load_tokenizer(spec.reward_model, role="reward model")
    model = load_reward(spec.reward_model, tokenizer=tokenizer).to(default_device()).eval()
    max_length = effective_max_length(args.max_length, model.config, tokenizer)
    import torch

    def score(items: list[tuple[dict, dict]]) -> list[float]:
        sequences = [encode_sequence(row["prompt"], c["text"], tokenizer, max_length) for row, c in items]
        return reward_scores(model, tokenizer, sequences, batch_size=args.batch_size, max_length=max_length)

    with torch.no_grad():
        by_row = score_by_row(rows, score, args.batch_size, report)
    return [{"comparison_id": rows[r]["comparison_id"], **verdict_from_scores(s), "p_first": []}
            for r, s in sorted(by_row.items())]  # fmt: skip


def score_by_row(rows: list[dict], score: Callable[[list[tuple[dict, dict]]], list], batch_size: int,
                 report=None) -> dict[int, dict[int, Any]]:
    """{row index: {completion id: score}}: every (row, completion) scored by `score`, a chunk of 8 batches at a
    time, with progress reported after each chunk."""
    items = [(r, row, c) for r, row in enumerate(rows) for c in row["completions"]]
    scores: list = []
    chunk = max(batch_size * 8, 1)
    for start in range(0, len(items), chunk):
        scores += score([(row, c) for _, row, c in items[start : start + chunk]])
        if report:
            report(min(len(items), start + chunk), len(items))
    by_row: dict[int, dict[int, Any]] = {}
    for (r, _, c), value in zip(items, scores, strict=True):
        by_row.setdefault(r, {})[c["completion_id"]] = value
    return by_row


def judge_prm(spec: JobSpec, rows: list[dict], args: JudgeArgs, report=None) -> list[dict]:
    """Each response's steps scored by the process reward model; the higher outcome (min or last step score) wins,
    outcomes within args.tie_margin tie."""
    from trainer.models import default_device
    from trainer.prm import ProcessRewardScorer, is_prm, outcome

    if not is_prm(spec.reward_model):
        raise ValueError(f"a prm judge needs a process reward model (a prm version), and {spec.reward_model} is not one")
    scorer = ProcessRewardScorer(spec.reward_model, device=default_device(), outcome=args.prm_outcome,
                                 batch_size=args.batch_size, max_length=args.max_length)  # fmt: skip
    by_row = score_by_row(rows, lambda items: scorer.step_scores(
        [row["prompt"] for row, _ in items],
        [c.get("messages") or c["text"] for _, c in items]),  # a continuation's steps, else the text's
        args.batch_size, report)  # fmt: skip
    verdicts = []
    for r, scores in sorted(by_row.items()):
        outcomes = {cid: outcome(s, args.prm_outcome) for cid, s in scores.items()}
        verdict = verdict_from_outcomes(outcomes, args.tie_margin)
        verdicts.append({"comparison_id": rows[r]["comparison_id"], **verdict, "p_first": [],
                         "prm": {"outcome": args.prm_outcome, "tie_margin": args.tie_margin,
                                 "outcomes": {str(c): o for c, o in outcomes.items()},
                                 "step_scores": {str(c): s for c, s in scores.items()}}})  # fmt: skip
    return verdicts


def read_rows(path: str) -> list[dict]:
    rows = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        if "comparison_id" not in row or len(row.get("completions") or []) < 2:
            raise ValueError(f"{path} line {number}: needs comparison_id and at least 2 completions")
        rows.append(row)
    return rows


def main(spec: JobSpec, out_dir: Path) -> dict[str, Any]:
    args: JudgeArgs = spec.args
    if not progress.is_main_process():
        return {}
    if not spec.prompts_path:
        raise ValueError("a judge job needs prompts_path: lines of {comparison_id, prompt, completions: [...]}")
    rows = read_rows(spec.prompts_path)
    started = time.monotonic()

    def report(done: int, total: int) -> None:
        progress.progress(0.05 + 0.9 * done / max(total, 1), f"judged {done}/{total}")

    if args.method == "reward":
        if not spec.reward_model:
            raise ValueError("a reward judge needs reward_model")
        verdicts = judge_reward(spec, rows, args, report)
    elif args.method == "prm":
        if not spec.reward_model:
            raise ValueError("a prm judge needs reward_model (a process reward model checkpoint)")
        verdicts = judge_prm(spec, rows, args, report)
    elif args.method == "generative":
        if not spec.base_model:
            raise ValueError("a generative judge needs base_model (a causal LM checkpoint)")
        from trainer.models import default_device, load_policy, load_tokenizer

        tokenizer = load_tokenizer(spec.base_model, role="judge model")
        model = load_policy(spec.base_model, tokenizer=tokenizer, role="judge model").to(default_device()).eval()
        verdicts = judge_generative(model, tokenizer, rows, args, report)
    else:
        verdicts = judge_rules(rows, args)
    elapsed = time.monotonic() - started
    with open(out_dir / "judgments.jsonl", "w", encoding="utf-8") as handle:
        for verdict in verdicts:
            verdict["strengths"] = {str(k): v for k, v in verdict["strengths"].items()}
            handle.write(json.dumps(verdict) + "\n")
    firsts = [p for v in verdicts for p in v.get("p_first") or []]
    metrics: dict[str, Any] = {
        "judge/comparisons": len(verdicts),
        "judge/skipped": len(rows) - len(verdicts),
        "judge/mean_confidence": (sum(v["confidence"] for v in verdicts) / len(verdicts)) if verdicts else None,
        "judge/runtime_s": round(elapsed, 3),
        "judge/seconds_per_1000": round(1000 * elapsed / len(verdicts), 3) if verdicts else None,
    }
    if firsts:
        metrics["judge/position_bias"] = sum(firsts) / len(firsts)
    return metrics
