"""Errors a user can cause, reported as one clear message and exit status 2."""

from __future__ import annotations


class UserError(Exception):
    """A problem in the user's input: names the field, the problem and the fix."""

    exit_code = 2

    def __init__(self, field: str, problem: str, fix: str = ""):
        self.field, self.problem, self.fix = field, problem, fix
        super().__init__(f"{field}: {problem}" + (f". Fix: {fix}" if fix else ""))


def from_validation_error(error, source: str, model_cls=None) -> UserError:
    """Turn the first problem of a pydantic ``ValidationError`` into a ``UserError``."""
    first = error.errors()[0]
    loc = [str(p) for p in first["loc"]]
    field = ".".join(loc) or "(top level)"
    kind = first["type"]
    if kind == "extra_forbidden":
        known = _known_fields(model_cls, loc[:-1]) if model_cls else []
        hint = f"remove it or use one of: {', '.join(known)}" if known else "remove it"
        return UserError(f"{source}: {field}", f"unknown field '{loc[-1]}'", hint)
    if kind == "missing":
        return UserError(f"{source}: {field}", "required field is missing", f"add '{loc[-1]}'")
    return UserError(f"{source}: {field}", first["msg"].removeprefix("Value error, "), "correct the value")


def model_at(model_cls, loc) -> type | None:
    """The pydantic model that holds the fields under ``loc`` (field names, outermost first) of ``model_cls``;
    None where the path leads to no model."""
    from pydantic import BaseModel

    cls = model_cls
    for part in loc:
        field = cls.model_fields.get(part)
        if field is None:
            return None
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        cls = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if cls is None:
            return None
    return cls


def _known_fields(model_cls, loc: list[str]) -> list[str]:
    cls = model_at(model_cls, loc)
    return sorted(cls.model_fields) if cls is not None else []
