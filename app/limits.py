"""The bounds every input is checked against before it reaches the database, in one place.

- Integers: the ORM's `Integer` columns are PostgreSQL `int4`; a larger value is refused by the schema
  (`Id`, `Int4`, `NonNegativeInt4`) instead of failing in the database with "integer out of range".
- Lengths: `column_length(Model.column)` reads the model's `String(n)`; schemas and the import parser
  use it, so a length lives in the model only.
- Characters: PostgreSQL stores neither NUL (in `text` or `jsonb`) nor a lone UTF-16 surrogate (which has
  no UTF-8 form). One rule for them, in this module: **refused in what people send, stripped from what models
  write.** `bad_character` finds them; `Input` (the base of every request body), `CleanStr`, `varchar` and the
  import parser refuse them with a 422 naming the field (a person can fix the input); `clean_model_output`
  removes them from a model's output (generated answers, a verifier's or judge's output: nobody can resend it,
  and a reader never sees the character anyway) before it is stored.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from annotated_types import Interval, MaxLen
from pydantic import AfterValidator, BaseModel, ConfigDict, field_validator

INT4_MIN = -(2**31)
INT4_MAX = 2**31 - 1

Id = Annotated[int, Interval(ge=1, le=INT4_MAX)]
"""A row id (primary keys are int4)."""
Int4 = Annotated[int, Interval(ge=INT4_MIN, le=INT4_MAX)]
NonNegativeInt4 = Annotated[int, Interval(ge=0, le=INT4_MAX)]
PositiveInt4 = Annotated[int, Interval(ge=1, le=INT4_MAX)]

_BAD = re.compile("[\x00\ud800-\udfff]")


def column_length(column) -> int:
    """The declared length of a `String(n)` column, e.g. `column_length(Project.name)` -> 200."""
    length = column.type.length
    if length is None:
        raise TypeError(f"{column} has no length")
    return length


def bad_character(text: str) -> str | None:
    """What PostgreSQL would refuse in `text`, said for an error message; None when it is fine."""
    match = _BAD.search(text)
    if match is None:
        return None
    char = match.group()
    what = "a NUL character" if char == "\x00" else f"a lone surrogate (U+{ord(char):04X})"
    return f"contains {what} at position {match.start()}, which cannot be stored"


def strip_bad_characters(text: str) -> str:
    return _BAD.sub("", text)


def clean_model_output(value: Any) -> Any:
    """A model's output (a string, or JSON-like lists and objects of them, keys included) without the characters
    the database refuses: the "strip in model output" half of the rule above."""
    if isinstance(value, str):
        return strip_bad_characters(value)
    if isinstance(value, list | tuple):
        return [clean_model_output(item) for item in value]
    if isinstance(value, dict):
        return {clean_model_output(key): clean_model_output(item) for key, item in value.items()}
    return value


def find_bad_character(value: Any, where: str = "") -> str | None:
    """The first string inside a JSON-like value (keys included) that `bad_character` refuses, as
    "where[0].key contains ..."; None when there is none."""
    stack: list[tuple[Any, str]] = [(value, where)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            problem = bad_character(item)
            if problem:
                return f"{path or 'value'} {problem}"
        elif isinstance(item, dict):
            for key, child in reversed(list(item.items())):
                if isinstance(key, str) and (problem := bad_character(key)):
                    return f"a key of {path or 'the object'} {problem}"
                stack.append((child, f"{path}.{key}" if path else str(key)))
        elif isinstance(item, list | tuple):
            stack.extend((child, f"{path}[{i}]") for i, child in reversed(list(enumerate(item))))
    return None


def check_text(value: str) -> str:
    problem = bad_character(value)
    if problem:
        raise ValueError(f"the text {problem}")
    return value


def check_json(value: Any) -> Any:
    problem = find_bad_character(value)
    if problem:
        raise ValueError(problem)
    return value


CleanStr = Annotated[str, AfterValidator(check_text)]
"""A string with no character the database refuses (for query and path parameters)."""


def varchar(column) -> Any:
    """A string type fit for `column`: at most its length, no character the database refuses."""
    return Annotated[str, MaxLen(column_length(column)), AfterValidator(check_text)]


def parse_id(text: str) -> int | None:
    """A decimal id as typed in a path or form ("12"), or None: ASCII digits only (`int("²")` raises,
    `"²".isdigit()` is true) and within int4."""
    if not (text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if 1 <= value <= INT4_MAX else None


class Input(BaseModel):
    """Base of request bodies: an unknown field is refused (422 naming it: a typo in a setting must not silently
    do nothing), and every string in every field (nested ones and object keys too) is checked for characters the
    database refuses."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        if isinstance(value, BaseModel):
            return value  # checked by its own validators
        return check_json(value)


UNSTORABLE = ("A value cannot be stored: a number out of range, a text longer than its field, or a character the "
              "database refuses (NUL).")  # fmt: skip


def register(app) -> None:
    """The safety net behind the schemas: a value the database refuses (`DataError`: integer out of range, value
    too long, NUL in text; a lone surrogate the driver cannot encode) is a 422, never a 500. Inputs are checked
    before they get here (the types above); this catches a form field or a new route that was not."""
    import logging

    from sqlalchemy import exc as sa_exc

    from app.errors import RankforgeError, Unprocessable

    log = logging.getLogger("rankforge.limits")

    async def unstorable(request, error: Exception):
        if isinstance(error, sa_exc.StatementError) and not isinstance(error, sa_exc.DataError) \
                and not isinstance(error.orig, UnicodeEncodeError):  # fmt: skip
            raise error
        log.warning("refused a value the database cannot store on %s %s: %s", request.method, request.url.path,
                    type(getattr(error, "orig", error)).__name__)  # fmt: skip
        return await app.exception_handlers[RankforgeError](request, Unprocessable(UNSTORABLE))

    app.add_exception_handler(sa_exc.DataError, unstorable)
    app.add_exception_handler(sa_exc.StatementError, unstorable)
