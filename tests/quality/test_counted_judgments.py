"""Which judgments count, figure by figure (app.judgments.selections), proven on real databases.

The same base data is built into several projects: pairwise comparisons between two policy versions, gold items, a
practice item, three raters with attribute scores, a judge's verdicts and a round over the comparisons. The
planted project gets, besides, one of each thing no figure may count unless it says so: a judgment an admin
excluded, an AI vote, a practice answer, a voided battle and an imported judgment, each contradicting the raters on
the same comparison (so any figure that counts one moves). Each figure of the table is computed on the planted
project and on a project holding only the extras the figure documents as counted, and must come out equal.

Written against the readers' public functions as they were before app.judgments.selections existed, so the same
file runs on the starting commit and shows which figures counted what they should not.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from sqlalchemy import select

from app.db import session_scope

EXTRAS = ("excluded", "ai", "practice", "voided_battle", "imported")
WHEN = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


# --- the project builder ----------------------------------------------------------------------------------------


def _setup_shared(db) -> dict:
    """Users and model versions every project shares (usernames and version names are global)."""
    from app.models import ModelVersion
    from app.users.service import create_user

    users = {name: create_user(db, name, "annotator", "secret-pass-1", actor=None).id for name in ("r1", "r2", "r3", "r4")}
    versions = {}
    for name in ("policy-old", "policy-new"):
        version = ModelVersion(name=name, kind="policy", path=f"/models/{name}")
        db.add(version)
        db.flush()
        versions[name] = version.id
    return {"users": users, "versions": versions}


def _judgment(db, comparison, *, rater_id, ranking, source="human", attributes=None, flags=(), active_ms=30_000):
    from app.models import Judgment

    top = ranking[0]
    judgment = Judgment(comparison_id=comparison.id, project_id=comparison.project_id, rater_id=rater_id,
                        ranking=ranking, attributes=attributes or {}, flags=list(flags), time_spent_ms=active_ms,
                        active_ms=active_ms, source=source, top_completion_id=top[0] if len(top) == 1 else None,
                        chosen_position=comparison.completion_ids.index(top[0]) if len(top) == 1 else None,
                        created_at=WHEN)  # fmt: skip
    db.add(judgment)
    db.flush()
    return judgment


def _ai_vote(db, comparison, judge, winner: int, loser: int, confidence: float):
    from app.models import AIVerdict

    judgment = _judgment(db, comparison, rater_id=None, ranking=[[winner], [loser]], source="ai", active_ms=None)
    db.add(AIVerdict(judgment_id=judgment.id, comparison_id=comparison.id, project_id=comparison.project_id,
                     judge_id=judge.id, method="reward", confidence=confidence,
                     detail={"ranking": [[winner], [loser]]}, counted=False))  # fmt: skip


def build_project(db, shared: dict, slug: str, extras: frozenset[str]) -> int:
    """The base project plus these extras; returns its id."""
    from app.models import Comparison, Completion, FlagReview, Judge, Judgment, PracticeAnswer, Prompt, Round
    from app.projects.schemas import ProjectCreate
    from app.projects.service import create_project

    project = create_project(db, ProjectCreate(name=slug, slug=slug, allow_ties=True, overlap=3,
                                               attributes=[{"name": "helpful", "min": 1, "max": 7}],
                                               pay_unit="judgment", pay_rate=1.0), actor=None)  # fmt: skip
    r1, r2, r3, r4 = (shared["users"][name] for name in ("r1", "r2", "r3", "r4"))
    old, new = shared["versions"]["policy-old"], shared["versions"]["policy-new"]

    def comparison(i: int, *, gold=None, practice=False) -> tuple:
        prompt = Prompt(project_id=project.id, external_id=f"q{i}", messages=[{"role": "user", "content": f"Q{i}?"}])
        db.add(prompt)
        db.flush()
        a = Completion(prompt_id=prompt.id, text=f"old answer to {i}" + "." * i, model_name="policy-old",
                       model_version_id=old)  # fmt: skip
        b = Completion(prompt_id=prompt.id, text=f"new answer to {i}", model_name="policy-new", model_version_id=new)
        db.add_all([a, b])
        db.flush()
        row = Comparison(project_id=project.id, prompt_id=prompt.id, completion_ids=[a.id, b.id], required=3,
                         is_gold=gold is not None, practice=practice,
                         gold_ranking=None if gold is None else [[(a, b)[gold].id], [(a, b)[1 - gold].id]])  # fmt: skip
        db.add(row)
        db.flush()
        return row, a.id, b.id

    def helpful(a: int, b: int, score_a: int, score_b: int) -> dict:
        return {"helpful": {str(a): score_a, str(b): score_b}}

    # Six comparisons of the old and the new policy: r1 and r2 rate all, r3 the last three; new mostly wins.
    regular = [comparison(i) for i in range(6)]
    votes = {0: ("new", "new", None), 1: ("new", "old", None), 2: ("new", "new", None), 3: ("old", "new", "new"),
             4: ("new", "new", "old"), 5: ("tie", "new", "new")}  # fmt: skip
    for i, (row, a, b) in enumerate(regular):
        for rater, vote in zip((r1, r2, r3), votes[i], strict=True):
            if vote is None:
                continue
            ranking = {"new": [[b], [a]], "old": [[a], [b]], "tie": [[a, b]]}[vote]
            scores = {"new": (3, 6), "old": (5, 4), "tie": (4, 4)}[vote]
            _judgment(db, row, rater_id=rater, ranking=ranking, attributes=helpful(a, b, *scores))
    gold = [comparison(10 + i, gold=1) for i in range(2)]
    for row, a, b in gold:
        _judgment(db, row, rater_id=r1, ranking=[[b], [a]])
        _judgment(db, row, rater_id=r2, ranking=[[a], [b]])
    practice_item, pa, pb = comparison(20, gold=1, practice=True)
    # A judge's verdicts on the regular comparisons (it agrees with the majority but on comparison 3).
    judge = Judge(project_id=project.id, name="judge", method="reward", params={})
    db.add(judge)
    db.flush()
    for i, (row, a, b) in enumerate(regular[1:], start=1):
        _ai_vote(db, row, judge, *((a, b) if i == 3 else (b, a)), confidence=0.6 + 0.05 * i)
    # A finished round over them: the old policy against the new one, the reward model's scores favouring the new.
    ids = [row.id for row, _a, _b in regular]
    scores = {str(b): 1.0 + 0.1 * i for i, (_row, _a, b) in enumerate(regular)}
    scores |= {str(a): 0.5 + 0.1 * i for i, (_row, a, _b) in enumerate(regular)}
    db.add(Round(project_id=project.id, number=1, status="rating", policy_version_id=old, new_policy_version_id=new,
                 comparison_ids=ids, eval_comparison_ids=ids, eval_scores=scores, prompt_ids=[]))  # fmt: skip

    # The extras: each says "old wins" on comparison 0, where the raters said "new".
    target, a, b = regular[0]
    contrary = [[a], [b]]
    if "excluded" in extras:  # r3 flags it unsafe, an admin excludes it
        excluded = _judgment(db, target, rater_id=r3, ranking=contrary, attributes=helpful(a, b, 7, 1),
                             flags=["unsafe"])  # fmt: skip
        db.add(FlagReview(judgment_id=excluded.id, project_id=project.id, resolution="excluded", note=""))
    if "ai" in extras:
        _ai_vote(db, target, judge, a, b, confidence=0.99)
    if "voided_battle" in extras:  # r4's live vote whose other side failed
        battle = _judgment(db, target, rater_id=r4, ranking=contrary, attributes=helpful(a, b, 7, 1), source="battle")
        if hasattr(Judgment, "voided_at"):  # before app.judgments.selections there was no way to void a vote
            battle.voided_at = WHEN
    if "imported" in extras:
        _judgment(db, target, rater_id=None, ranking=contrary, attributes=helpful(a, b, 7, 1), source="imported",
                  active_ms=None)  # fmt: skip
    if "practice" in extras:  # r3 answers the practice item, wrongly
        db.add(PracticeAnswer(project_id=project.id, comparison_id=practice_item.id, rater_id=r3,
                              ranking=[[pa], [pb]], score=0.0, time_spent_ms=40_000, active_ms=40_000,
                              created_at=WHEN))  # fmt: skip
    db.flush()
    return project.id


# --- the figures ------------------------------------------------------------------------------------------------


def _project(db, project_id):
    from app.models import Project

    return db.get(Project, project_id)


def _stats(db, project_id) -> dict:
    from app.quality.service import project_stats

    return project_stats(db, _project(db, project_id))


def _round(db, project_id) -> dict:
    from app.models import Round
    from app.training.rounds import round_metrics

    return round_metrics(db, db.scalar(select(Round).where(Round.project_id == project_id)))


def _without_ids(value):
    """A figure with its database ids taken out (each project has its own), lists sorted: what a reader sees."""
    if isinstance(value, dict):
        return {k: _without_ids(v) for k, v in value.items()
                if not (k == "id" or k.endswith("_id") or k.endswith("_ids"))}  # fmt: skip
    if isinstance(value, list):
        return [_without_ids(v) for v in value]
    return value


def _export(db, project_id, export_format: str, **filters) -> list:
    from app.datasets.formats import export_rows
    from app.datasets.service import iter_judged_comparisons, parse_spec, rater_weights

    project = _project(db, project_id)
    spec = parse_spec({"format": export_format, "filters": filters, "split": {"test_fraction": 0.0}})
    rows = export_rows(iter_judged_comparisons(db, project, spec, rater_weights(db, project)), export_format)
    return sorted(json.dumps(_without_ids(row), sort_keys=True, default=str) for _split, row in rows)


def _judge_agreement(db, project_id) -> list:
    from app.judges.service import judge_agreement

    return _without_ids(judge_agreement(db, _project(db, project_id)))


def _leaderboard(db, project_id) -> dict:
    from app.quality.service import leaderboard

    return leaderboard(db, _project(db, project_id), bootstrap=50)


def _attribute_leaderboard(db, project_id) -> dict:
    from app.quality.attributes import attribute_leaderboard

    return attribute_leaderboard(db, _project(db, project_id))


def _reliability(db, project_id) -> dict:
    from app.quality.service import rater_reliability

    return rater_reliability(db, _project(db, project_id))


def _dashboard(db, project_id) -> dict:
    from app.quality.service import dashboard

    figures = dashboard(db, _project(db, project_id), now=datetime(2026, 12, 2, tzinfo=UTC))
    return {key: figures[key] for key in ("judgments_per_day_by_rater", "agreement_over_time", "time_histogram")}


def _pay(db, project_id) -> list:
    from app.tasks.pay import pay_report

    return pay_report(db, _project(db, project_id))


FIGURES = [
    # (figure, how it is read, the extras it documents as counted)
    ("alpha (agreement: nominal, per attribute)", lambda db, p: _stats(db, p)["agreement"], ()),
    ("raters: reliability, agreement with majority, gold accuracy, flags", lambda db, p: _stats(db, p)["raters"], ()),
    ("pairwise rater agreement", lambda db, p: _stats(db, p)["pairwise_agreement"], ()),
    ("stats judgments", lambda db, p: _stats(db, p)["judgments"], ()),
    ("rater reliability (export weights)", _reliability, ()),
    ("dashboard", _dashboard, ()),
    ("leaderboard", _leaderboard, ()),
    ("attribute leaderboard", _attribute_leaderboard, ()),
    ("round win rate", lambda db, p: {k: _round(db, p)[k] for k in ("win_rate", "win_rate_ci", "battles")}, ()),
    ("round AI win rate", lambda db, p: _round(db, p).get("ai_win_rate"), ("ai",)),
    ("reward accuracy", lambda db, p: {k: _round(db, p)[k] for k in ("reward_accuracy", "reward_verdicts")}, ()),
    ("round pairwise agreement",
     lambda db, p: _round(db, p).get("pairwise_agreement", _round(db, p).get("agreement")), ()),
    ("round judgments", lambda db, p: {k: _round(db, p)[k] for k in ("judgments", "eval_judgments")}, ()),
    ("judge agreement with humans", _judge_agreement, ("ai",)),
    ("export pairs", lambda db, p: _export(db, p, "pairs"), ("imported",)),
    ("export kto", lambda db, p: _export(db, p, "kto"), ("imported",)),
    ("export rankings", lambda db, p: _export(db, p, "rankings"), ("imported",)),
    ("export sft", lambda db, p: _export(db, p, "sft"), ("imported",)),
    ("export ratings", lambda db, p: _export(db, p, "ratings"), ("imported",)),
    ("export pairs, AI on request", lambda db, p: _export(db, p, "pairs", sources=["human", "imported", "ai"]),
     ("imported", "ai")),
    ("pay", _pay, ("excluded", "practice")),
]


def test_every_figure_counts_only_what_it_says(db_url):
    """Each figure on the planted project equals the figure on a project with only the extras it counts."""
    with session_scope(db_url) as db:
        shared = _setup_shared(db)
        projects: dict[frozenset[str], int] = {}

        def project_with(extras) -> int:
            key = frozenset(extras)
            if key not in projects:
                projects[key] = build_project(db, shared, f"p{len(projects)}", key)
            return projects[key]

        planted = project_with(EXTRAS)
        caught, compared = [], []
        for name, read, counts in FIGURES:
            assert set(counts) <= set(EXTRAS), name
            reference = project_with(counts)
            got, want = read(db, planted), read(db, reference)
            compared.append(name)
            if got != want:
                caught.append(f"{name}:\n  planted   {got}\n  reference {want}")
        assert len(compared) == len(FIGURES)
        assert not caught, "figures that counted a planted judgment:\n" + "\n".join(caught)


def test_the_planted_extras_would_move_the_figures(db_url):
    """The proof can fail: once the excluded judgment is let back in and the voided battle is turned into an
    ordinary human judgment, alpha, the leaderboard, the attribute leaderboard, the round win rate, reward accuracy,
    the exports and pay all move (so the equal figures above mean the extras were left out, not unnoticed)."""
    from app.models import FlagReview, Judgment

    with session_scope(db_url) as db:
        planted = build_project(db, _setup_shared(db), "planted", frozenset(EXTRAS))
        before = {name: read(db, planted) for name, read, _counts in FIGURES}
        db.execute(FlagReview.__table__.delete().where(FlagReview.project_id == planted))
        battle = db.scalar(select(Judgment).where(Judgment.project_id == planted, Judgment.source == "battle"))
        battle.source = "human"
        if hasattr(battle, "voided_at"):
            battle.voided_at = None
        db.flush()
        moved = {name for name, read, _counts in FIGURES if read(db, planted) != before[name]}
        for figure in ("alpha (agreement: nominal, per attribute)", "leaderboard", "attribute leaderboard",
                       "round win rate", "reward accuracy", "export pairs", "pay"):  # fmt: skip
            assert figure in moved, figure
