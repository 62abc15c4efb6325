"""Benchmark of the quality statistics over many judgments in PostgreSQL, through the real service functions.

Creates a database of its own, runs the migrations, bulk-seeds one pairwise project with INSERT ... SELECT over
generate_series (raters, prompts, two completions each from `--models` models of planted strength, comparisons,
`--overlap` judgments per comparison with a Bradley-Terry outcome, times, display positions, some gold items),
then times each figure the admin pages show and drops the database:

- agreement: the judgment columns read from SQL, then nominal Krippendorff's alpha, agreement with the majority
  and pairwise rater agreement (numpy);
- reliability: the one-coin Dawid-Skene EM over the same columns, gold items clamped;
- leaderboard: battles aggregated in SQL (rankings expanded with jsonb_array_elements), Bradley-Terry fit and
  1000 bootstrap replicates;
- project_stats: the whole /stats endpoint (agreement, reliability, flags incl. length bias computed in SQL).

    .venv/bin/python bench/stats.py [--judgments 1000000] [--overlap 4] [--raters 200] [--keep-db NAME]
"""

import dataclasses
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from app.migrate import upgrade  # noqa: E402


@dataclass
class Args:
    judgments: int = 1_000_000
    """Human judgments to seed (comparisons = judgments / overlap)."""
    overlap: int = 4
    """Judgments per comparison, each by a different rater."""
    raters: int = 200
    """Annotators."""
    models: int = 8
    """Models writing the completions; model m has log-strength (m - models/2) / 4."""
    gold_share: float = 0.02
    """Share of comparisons that are gold items (known answer: the stronger model)."""
    pg_url: str = os.environ.get("RANKFORGE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    """Admin connection to PostgreSQL; the benchmark's database is created beside it and dropped after."""
    keep_db: str = ""
    """Name of a database to keep: seeded under that name when it does not exist, reused as is when it does."""


def parse_args() -> Args:
    args = Args()
    argv = sys.argv[1:]
    for i in range(0, len(argv), 2):
        name = argv[i].removeprefix("--").replace("-", "_")
        field = {f.name: f for f in dataclasses.fields(Args)}[name]
        setattr(args, name, type(getattr(args, field.name))(argv[i + 1]))
    return args


SEED_SQL = [
    # raters 1..R (user 0 does not exist; ids come from the sequence, so start from a known state)
    """INSERT INTO "user" (id, username, password_hash, role, is_active, created_at)
       SELECT g, 'rater' || g, 'x', 'annotator', true, now() FROM generate_series(1, :raters) g""",
    """INSERT INTO project (id, slug, name, description, mode, overlap, max_overlap, allow_ties, attributes, gold_rate,
       lease_seconds, members_only, status, guideline_version, schedule, created_at)
       VALUES (1, 'bench', 'bench', '', 'pairwise', :overlap, :overlap, false, '[]', 0.0, 1200, false, 'active', 1,
       '{}', now())""",
    """INSERT INTO prompt (id, project_id, external_id, messages, is_chat, metadata, priority, created_at)
       SELECT g, 1, 'p' || g, '[]', false, '{}', 0, now() FROM generate_series(1, :comparisons) g""",
    # completions 2g-1 (model a) and 2g (model b, different from a); texts of varying length
    """INSERT INTO completion (id, prompt_id, text, model_name, params, metadata, created_at)
       SELECT 2 * g - 1 + k, g, repeat('x', 20 + ((g * 37 + k * 11) % 200)),
              'model-' || CASE WHEN k = 0 THEN g % :models ELSE (g % :models + 1 + (g / :models) % (:models - 1)) % :models END,
              '{}', '{}', now()
       FROM generate_series(1, :comparisons) g, generate_series(0, 1) k""",
    """INSERT INTO comparison (id, project_id, prompt_id, completion_ids, is_gold, gold_ranking, required, n_judgments,
       n_leases, priority, score_gap, metadata, created_at)
       SELECT g, 1, g, jsonb_build_array(2 * g - 1, 2 * g), (g % 1000) < :gold_permille, NULL, :overlap, :overlap,
              0, 0, 1e9, '{}', now()
       FROM generate_series(1, :comparisons) g""",
    # gold answer: the stronger model's completion
    """UPDATE comparison c SET gold_ranking = CASE WHEN a.model_name > b.model_name
         THEN jsonb_build_array(jsonb_build_array(a.id), jsonb_build_array(b.id))
         ELSE jsonb_build_array(jsonb_build_array(b.id), jsonb_build_array(a.id)) END
       FROM completion a, completion b WHERE c.is_gold AND a.id = 2 * c.id - 1 AND b.id = 2 * c.id""",
    # judgments: rater k of comparison g; a wins with Bradley-Terry probability from the planted strengths
    """INSERT INTO judgment (comparison_id, project_id, rater_id, ranking, attributes, flags, time_spent_ms,
       guideline_version, source, top_completion_id, chosen_position, created_at)
       SELECT s.g, 1, s.rater, jsonb_build_array(jsonb_build_array(s.top),
                jsonb_build_array(CASE WHEN s.top % 2 = 1 THEN s.top + 1 ELSE s.top - 1 END)), '{}', '[]',
              s.time_ms, 1, 'human', s.top, (random() < 0.5)::int, s.created_at
       FROM (
         SELECT g, ((g * 7 + k * 53) % :raters) + 1 AS rater,
                CASE WHEN random() < 1 / (1 + exp(-(sa - sb) / 4.0)) THEN 2 * g - 1 ELSE 2 * g END AS top,
                (2000 + random() * 20000)::int AS time_ms,
                now() - (random() * interval '14 days') AS created_at
         FROM (SELECT g, k,
                      (g % :models) - :models / 2.0 AS sa,
                      ((g % :models + 1 + (g / :models) % (:models - 1)) % :models) - :models / 2.0 AS sb
               FROM generate_series(1, :comparisons) g, generate_series(0, :overlap - 1) k) x
       ) s""",  # the other completion: the one that is not `top`
    "ANALYZE",
]


def main() -> None:
    args = parse_args()
    comparisons = args.judgments // args.overlap
    admin = sa.create_engine(args.pg_url, isolation_level="AUTOCOMMIT")
    name = args.keep_db or f"rankforge_bench_stats_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        exists = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first()
        if not exists:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = args.pg_url.rsplit("/", 1)[0] + "/" + name
    try:
        engine = sa.create_engine(url)
        if not exists:
            upgrade(url)
            params = {"raters": args.raters, "overlap": args.overlap, "comparisons": comparisons,
                      "models": args.models, "gold_permille": int(args.gold_share * 1000)}  # fmt: skip
            started = time.perf_counter()
            with engine.begin() as conn:
                for statement in SEED_SQL:
                    conn.execute(sa.text(statement), params if ":" in statement else {})
            print(f"seeded {comparisons} comparisons, {args.raters} raters, {args.models} models "
                  f"in {time.perf_counter() - started:.1f} s")  # fmt: skip
        with engine.connect() as conn:
            n = conn.execute(sa.text("SELECT count(*) FROM judgment")).scalar()
        print(f"{n} judgments in database {name}")

        from sqlalchemy.orm import Session

        from app.models import Project
        from app.quality import service, stats

        timings = {}
        with Session(engine) as db:
            project = db.get(Project, 1)
            t = time.perf_counter()
            cols = service.judgment_arrays(db, project)
            regular = ~cols["is_gold"]
            unit, rater, top = cols["comparison"][regular], cols["rater"][regular], cols["top_code"][regular]
            alpha = stats.krippendorff_alpha(unit, rater, top, "nominal")
            stats.agreement_with_majority(unit, rater, top)
            stats.pairwise_rater_agreement(unit, rater, top)
            timings["agreement"] = time.perf_counter() - t
            t = time.perf_counter()
            gold_ids, gold_tops = service.gold_answers(db, project)
            reliability = service.reliability_from_arrays(cols, gold_ids, gold_tops, project)
            timings["reliability"] = time.perf_counter() - t
            t = time.perf_counter()
            board = service.leaderboard(db, project)
            timings["leaderboard"] = time.perf_counter() - t
            t = time.perf_counter()
            service.project_stats(db, project)
            timings["project_stats (whole /stats endpoint)"] = time.perf_counter() - t
        print(f"alpha {alpha.alpha:.4f} over {alpha.units} units; reliability of {len(reliability)} raters, "
              f"mean {sum(reliability.values()) / len(reliability):.3f}; {board['battles']} battles")  # fmt: skip
        print("leaderboard: " + ", ".join(f"{m['name']} {m['rating']:.0f} [{m['ci_low']:.0f}, {m['ci_high']:.0f}]"
                                          for m in board["models"]))  # fmt: skip
        for key, seconds in timings.items():
            print(f"time/{key}: {seconds:.2f} s")
        core = timings["agreement"] + timings["reliability"] + timings["leaderboard"]
        print(f"time/agreement+reliability+leaderboard: {core:.2f} s (aim < 10 s)")
        engine.dispose()
    finally:
        if not args.keep_db:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


if __name__ == "__main__":
    main()
