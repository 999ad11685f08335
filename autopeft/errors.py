"""Errors a user can cause, reported as one clear message and exit status 2."""

from __future__ import annotations


class UserError(Exception):
    """A problem in the user's input: names the field, the problem and the fix."""

    exit_code = 2

    def __init__(self, field: str, problem: str, fix: str = ""):
        self.field, self.problem, self.fix = field, problem, fix
        super().__init__(f"{field}: {problem}" + (f". Fix: {fix}" if fix else ""))


def from_validation_error(error, source: str, model_cls=None) -> UserError:
    """Turn the first problem of a pydantic ``ValidationError`` into a ``UserError``.

    A field that takes one of several kinds (a number or a list of numbers) fails once per kind;
    the failure that reaches deepest into the value (the list's one bad item) is the one reported,
    and the kinds' names (``float``, ``list[float]``) are left out of the field's path.
    """
    errors = error.errors()
    first = errors[0]
    branch = next((i for i, part in enumerate(first["loc"]) if _is_kind(part)), None)
    if branch is not None:
        same_field = [e for e in errors if tuple(e["loc"][:branch]) == tuple(first["loc"][:branch])]
        first = max(same_field, key=lambda e: len(e["loc"]))
    loc = [str(p) for p in first["loc"] if not _is_kind(p)]
    field = ".".join(loc) or "(top level)"
    kind = first["type"]
    if kind == "extra_forbidden":
        known = _known_fields(model_cls, loc[:-1]) if model_cls else []
        hint = f"remove it or use one of: {', '.join(known)}" if known else "remove it"
        return UserError(f"{source}: {field}", f"unknown field '{loc[-1]}'", hint)
    if kind == "missing":
        return UserError(f"{source}: {field}", "required field is missing", f"add '{loc[-1]}'")
    problem = first["msg"].removeprefix("Value error, ")
    given = first.get("input")
    if kind != "value_error" and given is not None and not isinstance(given, dict):
        shown = repr(given)
        problem += f" (it is {shown if len(shown) <= 60 else shown[:57] + '...'})"
    bound = _BOUNDS.get(kind)
    if bound is not None and first.get("ctx"):
        limit = next(iter(first["ctx"].values()))
        shown_limit = f"{limit:g}" if isinstance(limit, (int, float)) else limit
        return UserError(f"{source}: {field}", problem, f"set it to a value {bound} {shown_limit}")
    return UserError(f"{source}: {field}", problem, _FIXES.get(kind, "correct the value"))


_BOUNDS = {"greater_than": "above", "greater_than_equal": "of at least", "less_than": "below", "less_than_equal": "of at most"}
_FIXES = {
    "int_type": "give a whole number", "int_parsing": "give a whole number", "int_from_float": "give a whole number",
    "float_type": "give a number", "float_parsing": "give a number", "finite_number": "give a finite number",
    "bool_type": "give true or false", "bool_parsing": "give true or false",
    "list_type": "give a list, as [a, b]", "string_type": "give a text value", "literal_error": "use one of the values named",
}


def _is_kind(part) -> bool:
    """Whether a part of a pydantic error's location names one kind of a union (``float``, ``list[int]``), not a field."""
    return isinstance(part, str) and ("[" in part or part in {"int", "float", "str", "bool", "list", "dict", "none"}
                                      or part.startswith("function-"))


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
