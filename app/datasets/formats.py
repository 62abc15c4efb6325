"""Turn judged comparisons into export rows (TRL dataset formats plus metadata columns).

Pure functions, no database. Every row builder takes one `JudgedComparison` and yields its rows, so an
export streams comparison by comparison with memory bounded by one comparison's judgments.

How votes aggregate (one `JudgmentVote` per rater; ``weight`` is the rater's reliability):

- **pairs** (`pair_rows`): each judgment's ranking (tie groups, best first) expands to pairs: for groups
  i < j every a in group i beats every b in group j with margin j - i; a tie gives no pair. Votes on the
  same unordered pair {a, b} aggregate: the direction with more weight wins and an exact tie gives no row.
  A judgment that ranked a and b equal is a voter that backs neither direction: it counts in ``n_votes``
  and in the agreement denominator. ``agreement`` = weight of the majority / weight of all voters on the
  pair; ``margin`` = plain mean of the majority voters' margins (a float: the mean of integer margins is
  not always an integer); ``weight`` = mean weight of the majority voters. ``group_chosen`` /
  ``group_rejected``: the rater groups (app.groups) whose votes favour each side, ``category``: the prompt's
  metadata category (the reward-model audit, trainer.audit, reads accuracy by group and category from them).
- **kto** (`kto_rows`): per judgment, the top group is desirable (True) and the bottom group undesirable
  (False); middle groups, and a ranking with a single group, abstain; a judgment flagged ``all_bad`` makes
  every option False. Per completion the weighted majority label wins (an exact tie gives no row);
  ``agreement``, ``n_votes`` and ``weight`` as for pairs, with abstaining judgments counted as voters.
  Conversational kto rows are turn-level: ``turn`` (the user turn answered) and ``conversation`` (the opening's id)
  say where in which conversation the labelled assistant turn sits.
- **rankings** (`ranking_rows`): one aggregate ranking per comparison by weighted Borda count (each
  judgment scores a completion +1 per completion it placed below it and -1 per completion above);
  equal scores tie. ``agreement`` = weighted share of (judgment, pair) relations (better / equal / worse)
  that match the aggregate ranking. No row when the aggregate is one single tie group.
- **sft** (`sft_rows`): the best group of that aggregate ranking, one row per completion in it; no rows
  when the aggregate has no winner or when judgments flagged ``all_bad`` hold half the weight or more
  (the best of bad answers is not a demonstration). Plus one row per edit (``edited: true``).
- **edits** (`JudgedComparison.edits`, rewrites raters wrote): in pairs, edit over its parent (margin 1) and
  over everything the parent beat in its author's ranking (margin 1 + the groups between), or, for a new
  answer, over every option; one voter (the author), ``edited: true``. Rejected edits are never passed in.
- **ratings** (`rating_rows`, the HelpSteer2 shape): one row per rated completion ``{prompt, completion, <one
  column per attribute>}``: the mean score of the raters who scored it (null where none did); ``n_votes`` the
  raters who scored any attribute of it, ``agreement`` 1 - the mean absolute deviation from the mean as a
  share of the scale's range (averaged over attributes), ``rank`` the completion's group in the aggregate
  ranking (0 best; null without one): a multi-objective reward model learns its preference head from it.

Filters on judgments (source, rater, date, guideline version, flags) are the caller's job; the
``min_agreement`` / ``min_votes`` parameters here filter aggregated rows.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import combinations
from typing import Any, Literal

CompletionId = Hashable
Message = dict[str, str]
Row = dict[str, Any]
EXPORT_FORMATS = ("pairs", "kto", "rankings", "sft", "ratings")


@dataclass(slots=True)
class JudgmentVote:
    """One rater's verdict on one comparison."""

    rater_id: Any
    ranking: list[list[CompletionId]]
    """Tie groups of completion ids, best first: ``[[c3], [c1, c2]]`` means c3 > c1 = c2."""
    weight: float = 1.0
    """The rater's reliability; 0 silences the vote, negative is refused."""
    flags: list[str] = field(default_factory=list)
    """e.g. ``all_bad``, ``unsafe``, ``wrong``."""
    source: Literal["human", "ai", "battle", "imported"] = "human"
    created_at: datetime | str | None = None
    guideline_version: int | None = None
    attributes: dict[str, dict[str, float]] = field(default_factory=dict)
    """Attribute scores: ``{attribute: {str(completion id): score}}``."""
    confidence: float | None = None
    """An AI judgment's confidence (source ai); None for people's."""


@dataclass(slots=True)
class Edit:
    """A rater's rewrite of `parent_id` (None: a new answer), with the author's ranking of the comparison."""

    completion_id: Any
    text: str
    parent_id: CompletionId | None
    rater_id: Any
    ranking: list[list[CompletionId]]
    weight: float = 1.0


@dataclass
class JudgedComparison:
    """One comparison with its completions and every judgment the caller kept after filtering."""

    comparison_id: Any
    prompt_id: Any
    prompt: str | list[Message]
    completions: dict[CompletionId, tuple[str, str | None]]
    """completion id -> (text, model name or None)."""
    is_gold: bool = False
    judgments: list[JudgmentVote] = field(default_factory=list)
    edits: list[Edit] = field(default_factory=list)
    """Edits (not rejected) written with the judgments kept; empty when the export leaves edits out."""
    continuations: dict[CompletionId, list[Message]] = field(default_factory=dict)
    """completion id -> its messages (app.imports.messages), for continuations of a conversation that are more than one
    plain assistant text (tool calls, tool results, reasoning); conversational rows carry them whole."""
    tools: list[dict] | None = None
    """The tools offered to the model in the conversation (the prompt's ``metadata.tools``, OpenAI's shape), if any."""
    scales: list[dict] = field(default_factory=list)
    """The project's attribute scales ``[{name, min, max}]`` (ratings rows have one column per scale)."""
    rater_groups: dict[Any, list[str]] = field(default_factory=dict)
    """rater id -> the rater's groups (``key=value``, app.groups); pairs rows then say which groups' votes favour
    each side (``group_chosen``, ``group_rejected``: the reward-model audit's accuracy by rater group)."""
    category: str | None = None
    """The prompt's category (its metadata ``category``), if any; pairs rows carry it (the audit's by category)."""


# ----------------------------------------------------------------------------------------------------
# Helpers


def _id_order(completion_id: CompletionId) -> tuple[str, Any]:
    """Sort key for ids of any one type, and stable across mixed int/str ids."""
    return (type(completion_id).__name__, completion_id)


def _sorted_ids(ids: Iterable[CompletionId]) -> list[CompletionId]:
    """Ids in `_id_order`; plain sorting gives that order for ids of one type (the usual case), and is faster."""
    ids = list(ids)
    if len({type(i) for i in ids}) <= 1:
        return sorted(ids)
    return sorted(ids, key=_id_order)


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values)


def _check(jc: JudgedComparison) -> None:
    completions = jc.completions
    for vote in jc.judgments:
        weight = vote.weight
        if weight >= 0 and weight != math.inf:  # the usual case in one test: a finite weight, distinct known ids
            ranked = [completion_id for group in vote.ranking for completion_id in group]
            if len(ranked) == len(placed := set(ranked)) and all(c in completions for c in placed):
                continue
        _check_vote(jc, vote)


def _check_vote(jc: JudgedComparison, vote: JudgmentVote) -> None:
    """The first problem of one vote, in ranking order, as an error naming it."""
    if not (math.isfinite(vote.weight) and vote.weight >= 0):
        raise ValueError(
            f"comparison {jc.comparison_id}: rater {vote.rater_id} has weight {vote.weight}; "
            "weights must be finite and >= 0"
        )
    placed: set[CompletionId] = set()
    for group in vote.ranking:
        for completion_id in group:
            if completion_id not in jc.completions:
                raise ValueError(
                    f"comparison {jc.comparison_id}: rater {vote.rater_id} ranked unknown "
                    f"completion {completion_id!r}"
                )
            if completion_id in placed:
                raise ValueError(
                    f"comparison {jc.comparison_id}: rater {vote.rater_id} ranked completion "
                    f"{completion_id!r} twice"
                )
            placed.add(completion_id)


def _positions(vote: JudgmentVote) -> dict[CompletionId, int]:
    return {completion_id: index for index, group in enumerate(vote.ranking) for completion_id in group}


def is_chat(prompt: str | list[Message]) -> bool:
    return not isinstance(prompt, str)


def format_prompt(jc: JudgedComparison, conversational: bool) -> str | list[Message]:
    """Prompt as TRL expects it: a message list (conversational) or a string (standard)."""
    if conversational:
        if isinstance(jc.prompt, str):
            return [{"role": "user", "content": jc.prompt}]
        return [dict(message) for message in jc.prompt]  # every field kept: tool calls and results, reasoning
    if isinstance(jc.prompt, str):
        return jc.prompt
    if len(jc.prompt) == 1 and jc.prompt[0]["role"] == "user":
        return jc.prompt[0]["content"]
    raise ValueError(
        f"comparison {jc.comparison_id}: prompt {jc.prompt_id} is a multi-message chat and cannot be a "
        "standard (string) prompt; export it with conversational=True"
    )


def _completion_value(text: str, conversational: bool, continuation: list[Message] | None = None) -> str | list[Message]:
    """TRL's completion: a string, or (conversational) the assistant's messages: the whole continuation, tool calls
    and their results included, when the completion has one."""
    if not conversational:
        if continuation and continues_the_conversation(continuation):
            raise ValueError("a completion continues the conversation with more user turns (a multi-turn battle): "
                             "its text answers the last of them, not the prompt; export it with conversational=True")
        return text
    return [dict(message) for message in continuation] if continuation else [{"role": "assistant", "content": text}]


def continues_the_conversation(continuation: Any) -> bool:
    """Whether a completion's continuation holds user turns after the prompt (a battle's follow-ups)."""
    return isinstance(continuation, list) and any(
        isinstance(message, dict) and message.get("role") == "user" for message in continuation
    )


def _tools_column(jc: JudgedComparison) -> Row:
    """TRL's ``tools`` column of conversational preference rows: the tools as a JSON string (TRL parses it; a string
    keeps the column one type however the tools' schemas differ), or None."""
    return {"tools": json.dumps(jc.tools, ensure_ascii=False) if jc.tools else None}


def _group_columns(jc: JudgedComparison, voters: list[JudgmentVote], pair_votes: list[tuple[int, int, float]],
                   winner_direction: int) -> Row:  # fmt: skip
    """``group_chosen`` / ``group_rejected``: the rater groups whose votes on this pair (weighted) favour the chosen /
    the rejected answer (a group split evenly is in neither; empty without labelled raters); ``category``: the
    prompt's (None without one). Every pairs row has the three columns, so JSONL and Parquet rows are the same."""
    if not jc.rater_groups:  # no labelled raters: no groups on either side
        return {"group_chosen": [], "group_rejected": [], "category": jc.category}
    tally: dict[str, float] = defaultdict(float)
    for vote, (direction, _, weight) in zip(voters, pair_votes, strict=True):
        for group in jc.rater_groups.get(vote.rater_id, ()):
            tally[group] += direction * winner_direction * (weight or 1e-12)
    return {"group_chosen": sorted(g for g, v in tally.items() if v > 0),
            "group_rejected": sorted(g for g, v in tally.items() if v < 0), "category": jc.category}


def _keep(row: Row, min_agreement: float, min_votes: int) -> bool:
    return row["agreement"] >= min_agreement and row["n_votes"] >= min_votes


# ----------------------------------------------------------------------------------------------------
# pairs


def pair_rows(
    jc: JudgedComparison,
    *,
    conversational: bool = False,
    min_agreement: float = 0.0,
    min_votes: int = 1,
) -> Iterator[Row]:
    """Preference pairs ``{prompt, chosen, rejected, ...}``, one per unordered pair with a majority."""
    _check(jc)
    # (first id, second id) in id order -> [(direction, margin, weight)], direction +1: first is better
    votes: dict[tuple[CompletionId, CompletionId], list[tuple[int, int, float]]] = defaultdict(list)
    voters: dict[tuple[CompletionId, CompletionId], list[JudgmentVote]] = defaultdict(list)  # their sources
    for vote in jc.judgments:
        ranking = vote.ranking
        if (len(ranking) == 2 and len(ranking[0]) == 1 and len(ranking[1]) == 1
                and type(better := ranking[0][0]) is type(worse := ranking[1][0])):  # fmt: skip
            # One decisive pair (every pairwise judgment): what the loop below makes of it, without its dict and sort.
            key, entry = ((worse, better), (-1, 1, vote.weight)) if worse < better else \
                ((better, worse), (1, 1, vote.weight))
            votes[key].append(entry)
            voters[key].append(vote)
            continue
        position = _positions(vote)
        for first, second in combinations(_sorted_ids(position), 2):
            gap = position[second] - position[first]
            votes[(first, second)].append(((gap > 0) - (gap < 0), abs(gap), vote.weight))
            voters[(first, second)].append(vote)
    prompt = None
    keys = list(votes)
    if len(keys) > 1:
        order = {completion_id: index for index, completion_id in enumerate(_sorted_ids({i for pair in votes for i in pair}))}
        keys.sort(key=lambda pair: (order[pair[0]], order[pair[1]]))
    for first, second in keys:
        pair_votes = votes[(first, second)]
        pair_voters = voters[(first, second)]
        if len(pair_votes) == 1:  # one voter: the general arithmetic below, done by hand (the same floats)
            winner_direction, margin, weight = pair_votes[0]
            if winner_direction == 0 or weight == 0:
                continue
            voter = pair_voters[0]
            margin, weight, agreement = float(margin), float(weight), 1.0
            sources = [voter.source]
            ai_confidence = float(voter.confidence) if voter.source == "ai" and voter.confidence is not None else None
        else:
            for_first = math.fsum(weight for direction, _, weight in pair_votes if direction > 0)
            for_second = math.fsum(weight for direction, _, weight in pair_votes if direction < 0)
            if for_first == for_second:
                continue
            winner_direction = 1 if for_first > for_second else -1
            majority = [
                (margin, weight) for direction, margin, weight in pair_votes if direction == winner_direction
            ]
            margin = _mean([float(margin) for margin, _ in majority])
            weight = _mean([weight for _, weight in majority])
            agreement = max(for_first, for_second) / math.fsum(weight for _, _, weight in pair_votes)
            sources = sorted({v.source for v in pair_voters})
            ai_confidence = _mean(ai) if (ai := [v.confidence for v in pair_voters
                                                 if v.source == "ai" and v.confidence is not None]) else None  # fmt: skip
        chosen, rejected = (first, second) if winner_direction > 0 else (second, first)
        chosen_text, chosen_model = jc.completions[chosen]
        rejected_text, rejected_model = jc.completions[rejected]
        if prompt is None:
            prompt = format_prompt(jc, conversational)
        row = {
            "prompt": prompt,
            "chosen": _completion_value(chosen_text, conversational, jc.continuations.get(chosen)),
            "rejected": _completion_value(rejected_text, conversational, jc.continuations.get(rejected)),
            "comparison_id": jc.comparison_id,
            "prompt_id": jc.prompt_id,
            "chosen_id": chosen,
            "rejected_id": rejected,
            "chosen_model": chosen_model,
            "rejected_model": rejected_model,
            "margin": margin,
            "agreement": agreement,
            "n_votes": len(pair_votes),
            "weight": weight,
            "is_gold": jc.is_gold,
            "edited": False,
            "sources": sources,
            "ai_confidence": ai_confidence,
            **(_tools_column(jc) if conversational else {}),
            **_group_columns(jc, pair_voters, pair_votes, winner_direction),
        }  # fmt: skip
        if _keep(row, min_agreement, min_votes):
            yield row
    yield from _edit_pair_rows(jc, conversational, min_agreement, min_votes)


NOT_SIMPLE = object()
"""`single_vote_pair_row`'s answer for a comparison that needs `pair_rows` itself."""


def single_vote_pair_row(comparison_id: Any, prompt_id: Any, completion_ids: list, is_gold: bool, messages: Any,
                         is_chat: bool, category: Any, ranking: Any, weight: float, source: str,
                         confidence: float | None, completions: dict, continuations: dict,
                         labelled_rater: bool) -> Row | None | object:  # fmt: skip
    """The standard (not conversational) pairs row of a comparison with one vote that ranks two of its completions
    one over the other (`ranking` [[better], [worse]], integer ids), without edits: exactly the row `pair_rows`
    makes of it (its one-voter case), before `min_agreement` / `min_votes`; None where pair_rows makes none (a zero
    weight). NOT_SIMPLE where pair_rows must decide (another shape of ranking, an unknown or repeated id, a weight
    pair_rows refuses, a labelled rater, a continuation, a prompt that is not one plain user message): the caller
    builds the JudgedComparison. `completions`, `continuations`: the batch's, by completion id; `messages`,
    `is_chat`, `category`: the prompt's, as the export reads them. The export's fast path
    (app.datasets.service.iter_pair_rows); tests/datasets/test_pair_fast_path.py holds the two to one definition."""
    if labelled_rater or type(ranking) is not list or len(ranking) != 2:
        return NOT_SIMPLE
    top, bottom = ranking
    if type(top) is not list or type(bottom) is not list or len(top) != 1 or len(bottom) != 1:
        return NOT_SIMPLE
    better, worse = top[0], bottom[0]
    if type(better) is not int or type(worse) is not int or better == worse:
        return NOT_SIMPLE
    if not (weight >= 0 and weight != math.inf):  # NaN, infinite, negative: _check refuses it
        return NOT_SIMPLE
    if better not in completion_ids or worse not in completion_ids or better in continuations \
            or worse in continuations:
        return NOT_SIMPLE
    for completion_id in completion_ids:  # JudgedComparison takes every option's text
        if completion_id not in completions:
            return NOT_SIMPLE
    if type(messages) is not list or not messages or type(first := messages[0]) is not dict or "content" not in first:
        return NOT_SIMPLE
    if is_chat:  # format_prompt: a chat of one user message is its text
        if len(messages) != 1 or first.get("role") != "user":
            return NOT_SIMPLE
    elif type(first["content"]) is not str:
        return NOT_SIMPLE
    if weight == 0:
        return None
    chosen_text, chosen_model = completions[better]
    rejected_text, rejected_model = completions[worse]
    return {  # keys in sorted order: the export writes this row without sorting it again (iter_pair_rows)
        "agreement": 1.0,
        "ai_confidence": float(confidence) if source == "ai" and confidence is not None else None,
        "category": category if isinstance(category, str) and category else None,
        "chosen": chosen_text,
        "chosen_id": better,
        "chosen_model": chosen_model,
        "comparison_id": comparison_id,
        "edited": False,
        "group_chosen": [],
        "group_rejected": [],
        "is_gold": is_gold,
        "margin": 1.0,
        "n_votes": 1,
        "prompt": first["content"],
        "prompt_id": prompt_id,
        "rejected": rejected_text,
        "rejected_id": worse,
        "rejected_model": rejected_model,
        "sources": [source],
        "weight": float(weight),
    }


def _edit_pair_rows(jc: JudgedComparison, conversational: bool, min_agreement: float, min_votes: int) -> Iterator[Row]:
    """Edit > parent, and edit > everything the parent beat in its author's ranking (a new answer: > every option)."""
    for edit in jc.edits:
        position = {c: i for i, group in enumerate(edit.ranking) for c in group}
        if edit.parent_id is None:
            beaten = [(c, 1 + position.get(c, 0)) for c in _sorted_ids(jc.completions)]
        elif edit.parent_id in position:
            top = position[edit.parent_id]
            beaten = [(edit.parent_id, 1)] + [(c, 1 + position[c] - top) for c in _sorted_ids(position)
                                              if position[c] > top]  # fmt: skip
        else:
            continue
        for rejected, margin in beaten:
            rejected_text, rejected_model = jc.completions[rejected]
            row = {
                "prompt": format_prompt(jc, conversational),
                "chosen": _completion_value(edit.text, conversational),
                "rejected": _completion_value(rejected_text, conversational, jc.continuations.get(rejected)),
                "comparison_id": jc.comparison_id,
                "prompt_id": jc.prompt_id,
                "chosen_id": edit.completion_id,
                "rejected_id": rejected,
                "chosen_model": None,
                "rejected_model": rejected_model,
                "margin": float(margin),
                "agreement": 1.0,
                "n_votes": 1,
                "weight": edit.weight,
                "is_gold": jc.is_gold,
                "edited": True,
                "sources": ["human"],  # a rater's rewrite
                "ai_confidence": None,
                **(_tools_column(jc) if conversational else {}),
            }
            if _keep(row, min_agreement, min_votes):
                yield row


# ----------------------------------------------------------------------------------------------------
# kto


def _turn_columns(jc: JudgedComparison, prompt: list[Message]) -> Row:
    """Turn-level KTO: which turn of which conversation a conversational row labels. ``turn``: the 0-based index of
    the user turn the completion answers (user messages in the history, less one); ``conversation``: a stable id of
    the conversation's opening (its messages up to the first user message), shared by the rows of every turn of one
    conversation (an Open-Assistant tree, a chat compared at several turns); ``tools`` as in pairs."""
    users = [index for index, message in enumerate(prompt) if message.get("role") == "user"]
    return {"turn": max(len(users) - 1, 0), "conversation": conversation_id(prompt), **_tools_column(jc)}


def conversation_id(prompt: list[Message]) -> str:
    """A stable id of a conversation: the digest of its opening (the messages up to the first user message), the
    same for every turn of it."""
    users = [index for index, message in enumerate(prompt) if message.get("role") == "user"]
    opening = prompt[: users[0] + 1] if users else prompt
    return hashlib.sha256(json.dumps(opening, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def kto_rows(
    jc: JudgedComparison,
    *,
    conversational: bool = False,
    min_agreement: float = 0.0,
    min_votes: int = 1,
) -> Iterator[Row]:
    """Unpaired rows ``{prompt, completion, label, ...}``: desirable (True) or undesirable (False). Conversational
    rows are turn-level: the prompt is the whole history up to the judged turn, the completion that turn's assistant
    messages (tool calls and results kept), with ``turn``, ``conversation`` and ``tools`` (`_turn_columns`)."""
    _check(jc)
    # completion id -> [(label vote +1 / -1 / 0 abstain, weight)]
    votes: dict[CompletionId, list[tuple[int, float]]] = defaultdict(list)
    for vote in jc.judgments:
        if "all_bad" in vote.flags:
            for completion_id in jc.completions:
                votes[completion_id].append((-1, vote.weight))
            continue
        last = len(vote.ranking) - 1
        for completion_id, group_index in _positions(vote).items():
            label = 0 if last == 0 else 1 if group_index == 0 else -1 if group_index == last else 0
            votes[completion_id].append((label, vote.weight))
    prompt = None
    for completion_id in sorted(votes, key=_id_order):
        completion_votes = votes[completion_id]
        good = math.fsum(weight for label, weight in completion_votes if label > 0)
        bad = math.fsum(weight for label, weight in completion_votes if label < 0)
        if good == bad:
            continue
        winner = 1 if good > bad else -1
        text, model = jc.completions[completion_id]
        if prompt is None:
            prompt = format_prompt(jc, conversational)
        row = {
            "prompt": prompt,
            "completion": _completion_value(text, conversational, jc.continuations.get(completion_id)),
            "label": winner > 0,
            **(_turn_columns(jc, prompt) if conversational else {}),
            "comparison_id": jc.comparison_id,
            "prompt_id": jc.prompt_id,
            "completion_id": completion_id,
            "model": model,
            "agreement": max(good, bad) / math.fsum(weight for _, weight in completion_votes),
            "n_votes": len(completion_votes),
            "weight": _mean([weight for label, weight in completion_votes if label == winner]),
            "is_gold": jc.is_gold,
        }
        if _keep(row, min_agreement, min_votes):
            yield row


# ----------------------------------------------------------------------------------------------------
# rankings and sft (both use the aggregate ranking)


@dataclass(frozen=True)
class AggregateRanking:
    groups: list[list[CompletionId]]
    """Tie groups of completion ids, best first (ids in id order inside a group)."""
    agreement: float
    n_votes: int
    weight: float
    """Mean weight of the judgments."""


def aggregate_ranking(jc: JudgedComparison) -> AggregateRanking | None:
    """Weighted Borda aggregate of the judgments; None without judgments or when everything ties."""
    _check(jc)
    if not jc.judgments:
        return None
    scores: dict[CompletionId, list[float]] = defaultdict(list)
    for vote in jc.judgments:
        position = _positions(vote)
        for completion_id, group_index in position.items():
            above = sum(len(group) for group in vote.ranking[:group_index])
            below = sum(len(group) for group in vote.ranking[group_index + 1 :])
            scores[completion_id].append(vote.weight * (below - above))
    total_score = {completion_id: math.fsum(values) for completion_id, values in scores.items()}
    groups: list[list[CompletionId]] = []
    for score in sorted(set(total_score.values()), reverse=True):
        groups.append(sorted((c for c, s in total_score.items() if s == score), key=_id_order))
    if len(groups) < 2:
        return None
    aggregate_position = {
        completion_id: index for index, group in enumerate(groups) for completion_id in group
    }
    matching: list[float] = []
    voting: list[float] = []
    for vote in jc.judgments:
        position = _positions(vote)
        for first, second in combinations(sorted(position, key=_id_order), 2):
            judged = (position[first] > position[second]) - (position[first] < position[second])
            aggregate = (aggregate_position[first] > aggregate_position[second]) - (
                aggregate_position[first] < aggregate_position[second]
            )
            voting.append(vote.weight)
            if judged == aggregate:
                matching.append(vote.weight)
    total = math.fsum(voting)
    agreement = math.fsum(matching) / total if total > 0 else 0.0
    return AggregateRanking(
        groups=groups,
        agreement=agreement,
        n_votes=len(jc.judgments),
        weight=_mean([vote.weight for vote in jc.judgments]),
    )


def ranking_rows(
    jc: JudgedComparison,
    *,
    conversational: bool = False,
    min_agreement: float = 0.0,
    min_votes: int = 1,
) -> Iterator[Row]:
    """At most one row: ``{prompt, completions: [str], ranking: tie groups of indexes, ...}``.

    Completions are listed in completion-id order (only those some judgment ranked).
    """
    aggregate = aggregate_ranking(jc)
    if aggregate is None:
        return
    completion_ids = sorted((c for group in aggregate.groups for c in group), key=_id_order)
    index_of = {completion_id: index for index, completion_id in enumerate(completion_ids)}
    row = {
        "prompt": format_prompt(jc, conversational),
        "completions": [jc.completions[c][0] for c in completion_ids],
        "completion_ids": completion_ids,
        "models": [jc.completions[c][1] for c in completion_ids],
        "ranking": [sorted(index_of[c] for c in group) for group in aggregate.groups],
        "comparison_id": jc.comparison_id,
        "prompt_id": jc.prompt_id,
        "agreement": aggregate.agreement,
        "n_votes": aggregate.n_votes,
        "weight": aggregate.weight,
        "is_gold": jc.is_gold,
    }
    if _keep(row, min_agreement, min_votes):
        yield row


def sft_rows(
    jc: JudgedComparison,
    *,
    conversational: bool = False,
    min_agreement: float = 0.0,
    min_votes: int = 1,
) -> Iterator[Row]:
    """``{prompt, completion, ...}`` for each completion in the aggregate ranking's best group."""
    yield from _best_rows(jc, conversational, min_agreement, min_votes)
    for edit in jc.edits:
        row = {
            "prompt": format_prompt(jc, conversational),
            "completion": _completion_value(edit.text, conversational),
            "comparison_id": jc.comparison_id,
            "prompt_id": jc.prompt_id,
            "completion_id": edit.completion_id,
            "model": None,
            "agreement": 1.0,
            "n_votes": 1,
            "weight": edit.weight,
            "is_gold": jc.is_gold,
            "edited": True,
        }
        if _keep(row, min_agreement, min_votes):
            yield row


def _best_rows(jc: JudgedComparison, conversational: bool, min_agreement: float, min_votes: int) -> Iterator[Row]:
    aggregate = aggregate_ranking(jc)
    if aggregate is None:
        return
    all_bad_weight = math.fsum(vote.weight for vote in jc.judgments if "all_bad" in vote.flags)
    total_weight = math.fsum(vote.weight for vote in jc.judgments)
    if total_weight == 0 or all_bad_weight * 2 >= total_weight:
        return
    prompt = format_prompt(jc, conversational)
    for completion_id in aggregate.groups[0]:
        text, model = jc.completions[completion_id]
        row = {
            "prompt": prompt,
            "completion": _completion_value(text, conversational, jc.continuations.get(completion_id)),
            "comparison_id": jc.comparison_id,
            "prompt_id": jc.prompt_id,
            "completion_id": completion_id,
            "model": model,
            "agreement": aggregate.agreement,
            "n_votes": aggregate.n_votes,
            "weight": aggregate.weight,
            "is_gold": jc.is_gold,
            "edited": False,
        }
        if _keep(row, min_agreement, min_votes):
            yield row


# ----------------------------------------------------------------------------------------------------
# ratings


def rating_rows(
    jc: JudgedComparison,
    *,
    conversational: bool = False,
    min_agreement: float = 0.0,
    min_votes: int = 1,
) -> Iterator[Row]:
    """``{prompt, completion, <attribute>: mean score or None, ...}`` per completion some rater scored."""
    _check(jc)
    names = [scale["name"] for scale in jc.scales]
    spans = {scale["name"]: max(1.0, float(scale["max"]) - float(scale["min"])) for scale in jc.scales}
    aggregate = aggregate_ranking(jc)
    rank = {} if aggregate is None else {c: i for i, group in enumerate(aggregate.groups) for c in group}
    prompt = None
    for completion_id in _sorted_ids(jc.completions):
        key = str(completion_id)
        scores: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
        voters = []
        for vote in jc.judgments:
            scored = False
            for name in names:
                value = (vote.attributes.get(name) or {}).get(key)
                if value is not None:
                    scores[name].append((float(value), vote.weight))
                    scored = True
            if scored:
                voters.append(vote.weight)
        if not voters and completion_id not in rank:
            continue
        text, model = jc.completions[completion_id]
        if prompt is None:
            prompt = format_prompt(jc, conversational)
        row = {"prompt": prompt, "completion": _completion_value(text, conversational, jc.continuations.get(completion_id)), "comparison_id": jc.comparison_id,
               "prompt_id": jc.prompt_id, "completion_id": completion_id, "model": model, "n_votes": len(voters),
               "weight": _mean(voters) if voters else 0.0, "is_gold": jc.is_gold,
               "rank": rank.get(completion_id)}  # fmt: skip
        agreements = []
        for name in names:
            values = scores[name]
            total = math.fsum(w for _, w in values)
            if not values or total <= 0:
                row[name] = None if not values else _mean([v for v, _ in values])
                continue
            mean = math.fsum(v * w for v, w in values) / total
            row[name] = mean
            deviation = math.fsum(abs(v - mean) * w for v, w in values) / total
            agreements.append(1.0 - deviation / spans[name])
        row["agreement"] = _mean(agreements) if agreements else 1.0
        if _keep(row, min_agreement, min_votes):
            yield row


ROW_BUILDERS: dict[str, Callable[..., Iterator[Row]]] = {
    "pairs": pair_rows,
    "kto": kto_rows,
    "rankings": ranking_rows,
    "sft": sft_rows,
    "ratings": rating_rows,
}


# ----------------------------------------------------------------------------------------------------
# Arrow schemas (for Parquet and hf/): the exact columns each row builder writes, for integer ids


def arrow_schema(export_format: str, *, conversational: bool = False, attributes: Iterable[str] = ()):
    """The Arrow schema of `export_format`'s rows when ids are integers (as the database's are): a snapshot
    parses its JSONL into this directly, without inferring types from the rows. `attributes`: the project's
    attribute names (ratings rows have one float column each)."""
    import pyarrow as pa

    text = pa.list_(pa.struct([("content", pa.string()), ("role", pa.string())])) if conversational else pa.string()
    common = [("comparison_id", pa.int64()), ("prompt_id", pa.int64()), ("prompt", text),
              ("agreement", pa.float64()), ("n_votes", pa.int64()), ("weight", pa.float64()),
              ("is_gold", pa.bool_())]  # fmt: skip
    columns = {
        "pairs": [("chosen", text), ("rejected", text), ("chosen_id", pa.int64()), ("rejected_id", pa.int64()),
                  ("chosen_model", pa.string()), ("rejected_model", pa.string()), ("margin", pa.float64()),
                  ("edited", pa.bool_()), ("sources", pa.list_(pa.string())), ("ai_confidence", pa.float64()),
                  ("group_chosen", pa.list_(pa.string())), ("group_rejected", pa.list_(pa.string())),
                  ("category", pa.string())]
                 + ([("tools", pa.string())] if conversational else []),
        "kto": [("completion", text), ("label", pa.bool_()), ("completion_id", pa.int64()), ("model", pa.string())]
               + ([("turn", pa.int64()), ("conversation", pa.string()), ("tools", pa.string())] if conversational
                  else []),
        "rankings": [("completions", pa.list_(pa.string())), ("completion_ids", pa.list_(pa.int64())),
                     ("models", pa.list_(pa.string())), ("ranking", pa.list_(pa.list_(pa.int64())))],
        "sft": [("completion", text), ("completion_id", pa.int64()), ("model", pa.string()), ("edited", pa.bool_())],
        "ratings": [("completion", text), ("completion_id", pa.int64()), ("model", pa.string()), ("rank", pa.int64())]
                   + [(name, pa.float64()) for name in attributes],
    }  # fmt: skip
    fixed = {name for name, _ in common} | {"completion", "completion_id", "model", "rank", "edited"}
    clash = sorted(set(attributes) & fixed) if export_format == "ratings" else []
    if clash:
        raise ValueError(f"attribute names {clash} clash with the ratings format's own columns; rename the scales")
    if export_format not in columns:
        raise ValueError(f"unknown export format {export_format!r}: expected one of {', '.join(EXPORT_FORMATS)}")
    return pa.schema(sorted(common + columns[export_format]))


# ----------------------------------------------------------------------------------------------------
# Splits


def split_unit(jc: JudgedComparison) -> Any:
    """What a split keeps together: a chat prompt's conversation (every turn of one conversation on one side, so no
    turn of a held-out conversation is trained on), else the prompt."""
    return f"conversation:{conversation_id(jc.prompt)}" if isinstance(jc.prompt, list) else jc.prompt_id


def split_for_prompt(prompt_id: Any, *, seed: int, test_fraction: float) -> Literal["train", "test"]:
    """Deterministic train/test split by prompt (or by `split_unit`): every row of it lands on the same side.

    The side depends only on (seed, prompt_id), not on row order or on which other prompts exist, so a
    prompt keeps its side as a project grows and across export formats.
    """
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    digest = hashlib.sha256(split_key(seed, prompt_id)).digest()
    unit = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
    return "test" if unit < test_fraction else "train"


def split_key(seed: int, prompt_id: Any) -> bytes:
    """What `split_for_prompt` hashes: the seed and the unit, NUL-separated."""
    return f"rankforge-split\0{seed}\0{prompt_id}".encode()


def split_test_below(test_fraction: float) -> int:
    """The split as one integer comparison: `split_for_prompt` says "test" exactly when the first 8 bytes of the
    digest, read as a big-endian integer n, are below this (so a database can decide it: app.datasets.service's
    exports on PostgreSQL). Not simply test_fraction * 2**64: the function's n / 2**64 is rounded to a float, so
    the boundary is the smallest n whose quotient reaches test_fraction (found by bisection, the same division)."""
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    low, high = 0, 2**64  # the answer is in [low, high]; high: no n at all reaches it (every unit is test)
    while low < high:
        middle = (low + high) // 2
        if middle / 2**64 < test_fraction:
            low = middle + 1
        else:
            high = middle
    return low


def export_rows(
    comparisons: Iterable[JudgedComparison],
    export_format: str,
    *,
    conversational: bool = False,
    min_agreement: float = 0.0,
    min_votes: int = 1,
    seed: int = 0,
    test_fraction: float = 0.0,
) -> Iterator[tuple[str, Row]]:
    """Stream ``(split, row)`` for every comparison, ready for `SnapshotWriter.write`."""
    if export_format not in ROW_BUILDERS:
        raise ValueError(
            f"unknown export format {export_format!r}: expected one of {', '.join(EXPORT_FORMATS)}"
        )
    build_rows = ROW_BUILDERS[export_format]
    for jc in comparisons:
        split = split_for_prompt(split_unit(jc), seed=seed, test_fraction=test_fraction)
        for row in build_rows(
            jc, conversational=conversational, min_agreement=min_agreement, min_votes=min_votes
        ):
            yield split, row
