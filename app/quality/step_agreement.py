"""Agreement on step labels: nominal Krippendorff alpha over steps, and per rater their labels, agreement with the
majority and reliability (one-coin Dawid-Skene, 3 categories), by the rules the judgment figures follow
(app.judgments.selections: counted human step judgments; voided ones never count).

A unit is one step of one trajectory (completion id, step index); a value is the rater's label there, coded
good 0 / bad 1 / neutral 2. Only each rater's counted labels enter: the steps up to and including their first
error (after it, a rater need not label, so a missing label is not a disagreement). A unit needs two raters to count
towards alpha (`stats.krippendorff_alpha`)."""

from __future__ import annotations

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Project, User
from app.quality import stats
from app.steps.labels import STEP_LABELS
from app.steps.service import counted_step_labels

LABEL_CODES = {label: float(i) for i, label in enumerate(STEP_LABELS)}


def step_label_arrays(rows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unit, rater, value) arrays from (completion id, step index, rater id, label) rows; units numbered densely."""
    units: dict[tuple[int, int], int] = {}
    unit, rater, value = [], [], []
    for completion_id, step, rater_id, label in rows:
        unit.append(units.setdefault((completion_id, step), len(units)))
        rater.append(rater_id)
        value.append(LABEL_CODES[label])
    return (np.asarray(unit, dtype=np.int64), np.asarray(rater, dtype=np.int64), np.asarray(value, dtype=np.float64))


def step_agreement(db: Session, project: Project) -> dict:
    """{krippendorff_alpha, units, labels, level, raters: [{user_id, username, labels, trajectories,
    agreement_with_majority, reliability}]}."""
    rows = list(counted_step_labels(db, project))
    raters = {row[2] for row in rows}
    usernames = dict(db.execute(select(User.id, User.username).where(User.id.in_(raters))).all()) if raters else {}
    return step_agreement_from_rows(rows, usernames)


def step_agreement_from_rows(rows: list, usernames: dict[int, str]) -> dict:
    """`step_agreement` from rows already read (`counted_step_labels`) and the raters' usernames: no database."""
    out = {"krippendorff_alpha": None, "units": 0, "labels": len(rows), "level": "nominal", "on": "step labels",
           "raters": []}  # fmt: skip
    if not rows:
        return out
    unit, rater, value = step_label_arrays(rows)
    alpha = stats.krippendorff_alpha(unit, rater, value, "nominal")
    majority = stats.agreement_with_majority(unit, rater, value)
    reliability = stats.rater_reliability(unit, rater, value, len(STEP_LABELS))
    trajectories: dict[int, set[int]] = {}
    for completion_id, _, rater_id, _ in rows:
        trajectories.setdefault(rater_id, set()).add(completion_id)
    rater_ids, counts = np.unique(rater, return_counts=True)
    out |= {"krippendorff_alpha": alpha.alpha, "units": alpha.units}
    out["raters"] = [{"user_id": int(r), "username": usernames.get(int(r), f"user {r}"), "labels": int(n),
                      "trajectories": len(trajectories[int(r)]),
                      "agreement_with_majority": majority.get(int(r), (None, 0))[0],
                      "reliability": reliability.get(int(r))}
                     for r, n in zip(rater_ids.tolist(), counts.tolist(), strict=True)]  # fmt: skip
    return out
