"""The rounds page (`/projects/{id}/rounds`): the recipe, every round with its status, jobs, versions and
evaluation figures, charts across rounds (win rate with its interval, reward accuracy, KL), and the buttons that
start the next round, retry a failed step or cancel a round."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse

from app import charts
from app.auth.deps import DbSession, Staff
from app.charts import Axis
from app.errors import RankforgeError, Unprocessable
from app.limits import Id
from app.models import ModelVersion
from app.projects.service import get_project
from app.quality.service import leaderboard
from app.training import round_recipe, round_views, rounds
from app.training.kinds import POLICY_UPDATES
from app.web import render

router = APIRouter(tags=["pages"])

RECIPE_FIELDS = ("pool_batch", "prompts_per_round", "samples_per_prompt", "temperature", "max_new_tokens",
                 "policy_update", "retrain_reward", "train_on", "complete_share", "deadline_minutes",
                 "eval_complete_share", "eval_deadline_minutes", "auto_after_previous", "auto_every_minutes",
                 "auto_min_judgments")  # fmt: skip


RECIPE_HELP = {
    "temperature": "Sampling temperature of the round's completions (higher: more varied answers).",
    "max_new_tokens": "Longest completion the policy may write, in tokens.",
    "policy_update": "How the policy learns from the judgments: the training kind of the update.",
    "eval_complete_share": "Finish the round once this share of its evaluation comparisons is complete.",
    "eval_deadline_minutes": "Or once evaluation rating took this long (empty: no deadline).",
}
"""Help for the recipe fields whose model field has no description (the others read RoundRecipe's)."""


def recipe_fields() -> list[dict]:
    """The recipe form's fields: name (the key of `rankforge round recipe --set`), a label and what it does."""
    fields = []
    for name in RECIPE_FIELDS:
        described = round_recipe.RoundRecipe.model_fields[name].description
        fields.append({"name": name, "label": name.replace("_", " ").capitalize(),
                       "help": described or RECIPE_HELP.get(name, "")})  # fmt: skip
    return fields


def _charts(rows: list[dict]) -> dict:
    names = [f"Round {r['number']}" for r in rows]
    metric = lambda key: [r["metrics"].get(key) for r in rows]  # noqa: E731
    ci = [r["metrics"].get("win_rate_ci") or [None, None] for r in rows]
    return {
        "win_rate": charts.interval_chart(
            "Win rate of each round's new policy over the previous one", names, metric("win_rate"),
            [c[0] for c in ci], [c[1] for c in ci], x_axis=Axis("Win rate", "share, ties half"),
            y_axis=Axis("Round"),
            empty="No evaluation yet: a round's win rate appears once raters have judged its evaluation pairs "
                  "(the new policy against the previous one on the held-out prompts)."),
        "reward_accuracy": charts.line_chart(
            "Reward-model accuracy on judgments it never trained on", [r["number"] for r in rows],
            {"reward accuracy": metric("reward_accuracy")}, x_axis=Axis("Round", kind="category"),
            y_axis=Axis("Accuracy", "share"), y_min=0.0, y_max=1.0,
            empty="No reward accuracy yet: it is measured on the evaluation judgments made after the reward "
                  "model's snapshot."),
        "kl": charts.line_chart(
            "KL of each new policy to its reference", [r["number"] for r in rows], {"KL": metric("kl")},
            x_axis=Axis("Round", kind="category"), y_axis=Axis("KL", "nats"),
            empty="No KL yet: it is measured on the new policy's evaluation samples (log-probability under the "
                  "new policy minus under the previous one)."),
    }  # fmt: skip


def _versions_chart(db, project):
    """The Bradley-Terry leaderboard across every model (each version a player), as on the leaderboard page."""
    models = leaderboard(db, project, style_control=False)["models"]  # ratings only: the battle tallies
    return charts.interval_chart(
        "Every version's rating with its 95% interval", [m["name"] for m in models], [m["rating"] for m in models],
        [m["ci_low"] for m in models], [m["ci_high"] for m in models], x_axis=Axis("Rating", "Elo scale"),
        y_axis=Axis("Model version"),
        empty="No ratings yet: versions get a rating once raters have judged evaluation pairs between them.")  # fmt: skip


def _context(db, project, error: str | None = None) -> dict:
    rows = [round_views.round_json(db, r) for r in rounds.list_rounds(db, project)]
    ids = {i for r in rows for i in (r["policy_version_id"], r["new_policy_version_id"], r["reward_version_id"]) if i}
    names = {v.id: v.name for v in db.query(ModelVersion).filter(ModelVersion.id.in_(ids))} if ids else {}
    recipe = round_recipe.get_recipe(project)
    active = next((r for r in rows if r["status"] in rounds.ROUND_ACTIVE), None)
    return {"project": project, "rounds": list(reversed(rows)), "charts": _charts(rows), "names": names,
            "recipe": recipe, "recipe_fields": recipe_fields(), "policy_updates": POLICY_UPDATES, "active": active,
            "error": error,
            "update_params": json.dumps(recipe.update_params), "reward_params": json.dumps(recipe.reward_params),
            "current_policy": rounds.current_policy(db, project), "versions": _versions_chart(db, project)}  # fmt: skip


@router.get("/projects/{project_ref}/rounds")
def rounds_page(project_ref: str, request: Request, db: DbSession, principal: Staff):
    project = get_project(db, project_ref)
    return render(request, "training/rounds.html", _context(db, project))


def _fail(request: Request, db, project_ref: str, error: RankforgeError):
    db.rollback()
    project = get_project(db, project_ref)
    return render(request, "training/rounds.html", _context(db, project, str(error.detail)),
                  status_code=error.status_code)  # fmt: skip


@router.post("/projects/{project_ref}/rounds/start")
def start_round(project_ref: str, request: Request, db: DbSession, principal: Staff):
    project = get_project(db, project_ref)
    try:
        rounds.start_round(db, project, actor=principal.user)
    except RankforgeError as error:
        return _fail(request, db, project_ref, error)
    return RedirectResponse(f"/projects/{project.id}/rounds", status_code=303)


@router.post("/projects/{project_ref}/rounds/{number}/{action}")
def round_action(project_ref: str, number: Id, action: str, request: Request, db: DbSession, principal: Staff):
    project = get_project(db, project_ref)
    actions = {"retry": rounds.retry_step, "cancel": rounds.cancel_round}
    if action not in actions:
        return render(request, "error.html", {"status": 404, "message": f"No action {action!r}."}, status_code=404)
    try:
        actions[action](db, rounds.get_round(db, project, number), actor=principal.user)
    except RankforgeError as error:
        return _fail(request, db, project_ref, error)
    return RedirectResponse(f"/projects/{project.id}/rounds", status_code=303)


@router.post("/projects/{project_ref}/rounds-recipe")
async def save_recipe(project_ref: str, request: Request, db: DbSession, principal: Staff):
    project = get_project(db, project_ref)
    form = await request.form()
    defaults = round_recipe.RoundRecipe()
    values: dict = {}
    try:
        for name in RECIPE_FIELDS:
            default = getattr(defaults, name)
            raw = str(form.get(name, "")).strip()
            if isinstance(default, bool):
                values[name] = raw in ("on", "true", "1")
            elif raw == "":
                values[name] = None if default is None else default
            elif isinstance(default, int):
                values[name] = int(raw)
            elif isinstance(default, float) or name.endswith("_minutes"):
                values[name] = float(raw)
            else:
                values[name] = raw
        for name in ("update_params", "reward_params"):
            values[name] = json.loads(str(form.get(name) or "{}"))
    except ValueError as error:
        return _fail(request, db, project_ref, Unprocessable(f"Recipe: {error}"))
    try:
        round_recipe.set_recipe(db, project, values, actor=principal.user)
    except RankforgeError as error:
        return _fail(request, db, project_ref, error)
    return RedirectResponse(f"/projects/{project.id}/rounds", status_code=303)


@router.get("/projects/{project_ref}/rounds/{number}")
def round_page(project_ref: str, number: Id, request: Request, db: DbSession, principal: Staff):
    """One round's data: its prompts, the completions and how raters judged them, the evaluation pairs."""
    project = get_project(db, project_ref)
    round_ = rounds.get_round(db, project, number)
    body = round_views.round_json(db, round_)
    return render(request, "training/round.html", {
        "project": project, "round": body, "names": _version_names(db, body),
        "data": round_views.round_data(db, round_.comparison_ids or []),
        "eval_data": round_views.round_data(db, round_.eval_comparison_ids or []),
    })  # fmt: skip


def _version_names(db, body: dict) -> dict:
    ids = [i for i in (body["policy_version_id"], body["new_policy_version_id"], body["reward_version_id"]) if i]
    return {v.id: v.name for v in db.query(ModelVersion).filter(ModelVersion.id.in_(ids))} if ids else {}
