"""Kinds only in the table: per-kind behaviour is a field of the one kind table (trainer.params.KIND_INFO, with the
app's own kinds in app.models.job), so no module, page or template compares, lists or names a job kind by its
string. Code that creates a job of one kind names it as `JobKind.<kind>`; code that behaves per kind asks the
table (`KIND_INFO[kind].trains_model`, `.prompts`, `.round_update`, ...)."""

from __future__ import annotations

import re
from pathlib import Path

from app.models.job import APP_JOB_KINDS
from trainer.params import KINDS
from trainer.results import MODEL_KINDS

ROOT = Path(__file__).resolve().parents[2]
TABLES = {"trainer/params.py", "app/models/job.py"}
"""Where kinds are defined (the trainer's kind table, the app's own kinds); migrations are not scanned."""
KIND = "|".join(sorted((*KINDS, *APP_JOB_KINDS), key=len, reverse=True))
LITERAL = rf"""['"](?:{KIND})['"]"""
JOB_ONLY = rf"""['"](?:{"|".join(k for k in (*KINDS, *APP_JOB_KINDS) if k not in MODEL_KINDS)})['"]"""
"""`kind="reward"` also names a model kind (list_versions(kind="reward")): an assignment is checked for the others."""
PATTERNS = {
    "compares a kind": re.compile(rf"""\bkind\w*\s*[!=]=\s*{LITERAL}|{LITERAL}\s*[!=]=\s*[\w.]*kind\b"""),
    "assigns a kind": re.compile(rf"""\bkind\s*=\s*{JOB_ONLY}"""),
    "tests membership in kinds": re.compile(rf"""\bkind\w*\s+(?:not\s+)?in\s+[(\[{{][^)\]}}]*{LITERAL}"""),
    "lists kinds": re.compile(rf"""[(\[]\s*(?:{LITERAL}\s*,\s*)+{LITERAL}\s*,?\s*[)\]]"""),
    "creates a job of a kind": re.compile(rf"""\bcreate_\w*job\(\s*db\s*,\s*(?:\w+\s*,\s*)?{LITERAL}"""),
    "looks a kind up": re.compile(rf"""\b(?:DEFAULTS|KIND_INFO|ARGS|FIELD_DOCS|KEY_PARAMS|SNAPSHOT_FORMAT)\[{LITERAL}\]"""
                                  rf"""|\b(?:parse_params|validated_params)\(\s*{LITERAL}"""),
    "maps a kind to a handler": re.compile(rf"""{LITERAL}\s*:\s*run_\w+"""),
}  # fmt: skip


def kind_literals(text: str) -> list[tuple[int, str, str]]:
    """(line number, what it does, the line) of every job-kind literal used as a kind in this source text."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        code = line.split("#", 1)[0] if not line.lstrip().startswith(("{", "<")) else line
        found += [(number, what, line.strip()) for what, pattern in PATTERNS.items() if pattern.search(code)]
    return found


def sources() -> list[Path]:
    files = [*(ROOT / "app").rglob("*.py"), *(ROOT / "trainer").rglob("*.py"), *(ROOT / "templates").rglob("*.html")]
    return sorted(path for path in files if str(path.relative_to(ROOT)) not in TABLES)


def test_no_job_kind_literal_outside_the_kind_table():
    problems = [f"{path.relative_to(ROOT)}:{number}: {what}: {line}"
                for path in sources() for number, what, line in kind_literals(path.read_text(encoding="utf-8"))]  # fmt: skip
    assert problems == []


def test_the_check_finds_each_way_of_writing_a_kind():
    """The probe itself, on the forms the code had before the kinds moved into the table."""
    planted = [
        'if kind == "judge":',
        '    if job.kind in ("generate", "score"):',
        'spec = JobSpec(kind="generate", job_id=1)',
        'POLICY_UPDATES = ("dpo", "kto", "ppo", "grpo", "rloo")',
        '{% for k in ("dpo", "kto", "ppo", "grpo", "rloo") %}',
        '{% if kind != "score" %}',
        'job = create_job(db, "verify", project_id=project.id)',
        'reward_job = create_training_job(db, project, "reward", base_model=1)',
        'params=DEFAULTS["judge"] | params',
        'HANDLERS = {"export": run_export_job}',
        'query.where(Job.kind == "score")',
    ]
    assert [len(kind_literals(line)) > 0 for line in planted] == [True] * len(planted)
    fine = ['kind = JobKind.generate', 'MODEL_KINDS = ("policy", "reward")', 'metrics["eval/score"]',
            'steps = {"generate": generate.id}', 'method: Literal["reward", "generative", "rules"]']  # fmt: skip
    assert [kind_literals(line) for line in fine] == [[]] * len(fine)


def test_every_kind_has_its_entry_module_and_a_typed_result():
    """A kind added to the table names a trainer module that exists and an output with a result type; a model it
    writes is one of the registry's model kinds (the prm kind's process reward model has its own typed figures)."""
    from trainer.params import KIND_INFO
    from trainer.results import PRMResult, ResultError, result_type

    for kind, info in KIND_INFO.items():
        module = info.entry.split(":")[0]
        assert (ROOT / (module.replace(".", "/") + ".py")).is_file(), kind
        try:
            result_type(info.output)
        except (KeyError, ResultError) as error:  # pragma: no cover - the failure this test exists for
            raise AssertionError(f"{kind}: output {info.output!r} has no result type") from error
        assert info.trains_model == (info.output in MODEL_KINDS)
    assert result_type(KIND_INFO["prm"].output) is PRMResult and KIND_INFO["prm"].dataset_format == "steps"
