"""Whether an export must write conversations (app.datasets.service.has_multi_message_chats), through the partial
indexes it reads (ix_prompt_chat, ix_completion_continues), on SQLite and PostgreSQL."""

from __future__ import annotations


def _project(db, slug: str):
    from app.models import Prompt
    from app.projects.schemas import ProjectCreate
    from app.projects.service import create_project

    project = create_project(db, ProjectCreate(name=slug, slug=slug), actor=None)
    prompt = Prompt(project_id=project.id, external_id="q", messages=[{"role": "user", "content": "Q?"}])
    db.add(prompt)
    db.flush()
    return project, prompt


def test_a_continuation_with_user_turns_or_a_chat_makes_an_export_conversational(db):
    from app.datasets.service import has_multi_message_chats
    from app.imports.messages import CONTINUATION_KEY
    from app.models import Completion, Prompt

    plain, prompt = _project(db, "plain")
    tool_turns = [{"role": "assistant", "content": "", "tool_calls": []}, {"role": "tool", "content": "42"}]
    db.add_all([Completion(prompt_id=prompt.id, text="A."),
                Completion(prompt_id=prompt.id, text="B.", meta={CONTINUATION_KEY: tool_turns}),
                Completion(prompt_id=prompt.id, text="C.", meta={CONTINUATION_KEY: None})])  # fmt: skip
    battle, battle_prompt = _project(db, "battle")
    follow_up = [{"role": "assistant", "content": "A."}, {"role": "user", "content": "And?"},
                 {"role": "assistant", "content": "B."}]  # fmt: skip
    db.add(Completion(prompt_id=battle_prompt.id, text="B.", meta={CONTINUATION_KEY: follow_up}))
    chat, _ = _project(db, "chat")
    db.add(Prompt(project_id=chat.id, external_id="c", is_chat=True,
                  messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q?"}]))  # fmt: skip
    one_user_chat, _ = _project(db, "one-user-chat")
    db.add(Prompt(project_id=one_user_chat.id, external_id="c", is_chat=True,
                  messages=[{"role": "user", "content": "Q?"}]))  # fmt: skip
    db.flush()
    assert not has_multi_message_chats(db, plain)  # continuations without user turns: still one prompt
    assert has_multi_message_chats(db, battle)  # a battle's follow-up: a user turn after the prompt
    assert has_multi_message_chats(db, chat)
    assert not has_multi_message_chats(db, one_user_chat)
