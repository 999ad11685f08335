"""A space file: YAML naming, for each PEFT method it searches, that method's entry (``modules``),
how modules are placed on layers, and the learning rates to search.

Each entry's schema is its method's (``Method.space``); dimensions come in plan order.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError, create_model, field_validator

from autopeft.errors import UserError, from_validation_error
from autopeft.job.load import read_yaml
from autopeft.workers.methods import method, searchable
from autopeft.workers.types import Strict

SPACES_PACKAGE = "autopeft.search_spaces"
FULL_POOLER = "full"  # a pooler choice: the whole pooler trains with the head


class _Modules(Strict):
    """The ``modules`` mapping: one optional field per searchable method, in plan order."""

    def present(self) -> list[str]:
        """The methods the file names, in plan order (the order of their dimensions)."""
        return [n for n in type(self).model_fields if getattr(self, n) is not None]

    def __getitem__(self, name: str) -> BaseModel:
        return getattr(self, name)


ModulesSpace = create_model("ModulesSpace", __base__=_Modules,
                            **{name: (method(name).space | None, None) for name in searchable()})


class SpaceFile(Strict):
    name: str
    description: str = ""
    modules: ModulesSpace
    layers: Literal["per_layer", "per_module", "all"] | list[int] = "per_layer"
    learning_rate: list[float] | Literal["search", "fixed"] = Field(
        "search", description="search: the job's rate times 1/3, 1 and 3; fixed: the job's rate only; a list: these rates")
    method_learning_rates: int | None = Field(None, ge=2, le=9, description="search each method's learning-rate scale "
                                              "among this many choices, log-spaced over its range")
    pooler: bool | Literal["search"] | list[int | Literal["full"]] = Field(
        False, description="train the model's pooler with the classifier (BERT-family classifiers): true, false, "
                           "search (both, a dimension), or a list of choices among 0 (frozen), LoRA ranks on its "
                           "dense layer and full")

    @field_validator("pooler", mode="before")
    @classmethod
    def _pooler_choice(cls, value: object) -> object:
        if isinstance(value, list):
            if not value or any(v != "full" and (type(v) is not int or v < 0) for v in value) or len(set(value)) != len(value):
                raise ValueError(f"a list of pooler choices holds distinct 0 (frozen), LoRA ranks (whole numbers above 0) "
                                 f"and full, not {value!r}")
            return value
        if value is not True and value is not False and value != "search":
            raise ValueError(f"pooler is true, false, search or a list such as [0, 8, full], not {value!r}")
        return value

    def pooler_choices(self) -> tuple:
        """What the pooler may do in a plan, cheapest first: 0 (frozen), LoRA ranks, "full" (trained whole)."""
        if self.pooler is False:
            return ()
        if self.pooler is True:
            return (FULL_POOLER,)
        listed = [0, FULL_POOLER] if self.pooler == "search" else self.pooler
        return tuple(sorted(listed, key=lambda v: (v == FULL_POOLER, 0 if v == FULL_POOLER else v)))

    @field_validator("learning_rate")
    @classmethod
    def _positive_rates(cls, rates: object) -> object:
        if isinstance(rates, list) and any(not 0 < r <= 1 for r in rates):
            raise ValueError("learning rates must be above 0 and at most 1")
        return rates

    @field_validator("modules", mode="before")
    @classmethod
    def _known_modules(cls, modules: object) -> object:
        if isinstance(modules, dict):
            if not modules:
                raise ValueError("the space names no module; use some of " + ", ".join(searchable()))
            for name in modules:
                if name not in searchable():
                    raise ValueError(f"unknown module '{name}'; known: {', '.join(searchable())}")
        return modules


def builtin_spaces() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files(SPACES_PACKAGE).iterdir() if p.name.endswith(".yaml"))


def fused_groups(data: dict, family) -> dict:
    """A built-in space's entries on a family that fuses projections: each module group the family
    lacks becomes the fused group that holds it there (query, key and value: ``query_key_value``;
    ``ffn_gate`` and ``ffn_in``: ``ffn_gate_in``), the choices of groups merged into one joined.
    A fused group that two entries would then both adapt is left out of it, so the space is refused
    for the groups it names."""
    entries = {name: entry.get("groups") for name, entry in (data.get("modules") or {}).items() if isinstance(entry, dict)}
    claims: dict[str, set] = {}
    for name, groups in entries.items():
        for group in groups if isinstance(groups, dict | list) else ():
            claims.setdefault(family.holder(group), set()).add(name)

    def fused(group: str) -> str:
        return family.holder(group) if len(claims[family.holder(group)]) == 1 else group

    modules = dict(data.get("modules") or {})
    for name, groups in entries.items():
        if isinstance(groups, dict):
            merged: dict = {}
            for group, choices in groups.items():
                known = merged.setdefault(fused(group), [])
                known.extend(c for c in (choices if isinstance(choices, list) else [choices]) if c not in known)
            modules[name] = {**modules[name], "groups": {g: sorted(c) for g, c in merged.items()}}
        elif isinstance(groups, list):
            modules[name] = {**modules[name], "groups": list(dict.fromkeys(fused(g) for g in groups))}
    return {**data, "modules": modules}


def read_space_file(name_or_path: str, family=None) -> tuple[SpaceFile, str]:
    """The validated space file (a built-in name or a path) and the name to use in messages; a
    built-in space for a ``family`` has its fused groups in place of those the family lacks."""
    if name_or_path.endswith((".yaml", ".yml")):
        path = Path(name_or_path)
        if not path.is_file():
            raise UserError("search_space", f"space file '{path}' does not exist", "give an existing YAML file or a built-in space name")
        text, source, built_in = path.read_text(), str(path), False
    else:
        shipped = resources.files(SPACES_PACKAGE).joinpath(f"{name_or_path}.yaml")
        if not shipped.is_file():
            raise UserError("search_space", f"no built-in space '{name_or_path}'", f"use one of {', '.join(builtin_spaces())} or a path to a .yaml file")
        text, source, built_in = shipped.read_text(), f"search space '{name_or_path}'", True
    data = read_yaml(text, source)
    if not isinstance(data, dict):
        raise UserError(source, "the space file is empty or not a mapping", "see docs/search-spaces.md for the format, or a shipped space such as search_spaces/lora.yaml")
    if family is not None and built_in:
        data = fused_groups(data, family)
    try:
        return SpaceFile.model_validate(data), source
    except ValidationError as exc:
        raise from_validation_error(exc, source, SpaceFile) from None
