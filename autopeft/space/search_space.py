"""A space file bound to one model: fixed dimensions, decoding a point into a Plan, exact cost.

Every dimension is ordinal over a short list of choices (index 0 is the first choice); a
module size of 0 turns that module off and a layer bit of 0 turns that layer off.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

from autopeft.errors import UserError
from autopeft.space.file import FULL_POOLER, SpaceFile, builtin_spaces, read_space_file
from autopeft.workers.build import count_trainable
from autopeft.workers.methods import method, searchable
from autopeft.workers.models import POOLER, ModelShape, no_pooler
from autopeft.workers.plan import Plan
from autopeft.workers.types import SpaceError

SCALE = "learning_rate_scale."  # the dimensions of each method's learning-rate scale
_POINT_OF_STARTS = 8  # ``point_of``: random starts besides the largest and the smallest point
_POINT_OF_SIDEWAYS = 8  # ``point_of``: sideways moves in a row at most
RATE_FACTORS = (1 / 3, 1.0, 3.0)  # ``learning_rate: search``: the job's rate times these


@dataclass(frozen=True)
class Dimension:
    name: str
    choices: tuple


@dataclass(frozen=True)
class SearchSpace:
    """A space file bound to one model shape: fixed dimensions, decoding and exact cost."""

    spec: SpaceFile
    shape: ModelShape
    dimensions: tuple[Dimension, ...]
    fixed: dict[str, object]

    def summary(self) -> dict:
        """What a point of the space means, as JSON: each dimension's choices and the fixed settings.
        A search resumes only in a space with the same summary (``run.prepare.check_resume``)."""
        return json.loads(json.dumps({"dimensions": {d.name: list(d.choices) for d in self.dimensions},
                                      "fixed": self.fixed}, default=str))

    def values(self, point: dict[str, int]) -> dict[str, object]:
        """Human-readable values of a point (ranks, sizes, bits), fixed settings included."""
        return {**self.fixed, **{d.name: d.choices[int(point[d.name])] for d in self.dimensions}}

    def _layers(self, value: dict[str, object], module: str) -> tuple[int, ...]:
        layers = self.spec.layers
        if layers == "all":
            return tuple(range(self.shape.num_layers))
        if isinstance(layers, list):
            return tuple(sorted(layers))
        prefix = f"{module}.layer" if layers == "per_module" else "layer"
        return tuple(i for i in range(self.shape.num_layers) if value[f"{prefix}.{i}"])

    def decode(self, point: dict[str, int]) -> Plan:
        """The Plan for a point given as choice indices, one per dimension."""
        value = self.values(point)
        modules = self.spec.modules
        parts = []
        for name in modules.present():  # a method's part, or (choosing per group) the parts of the methods chosen
            part = method(name).decode(modules[name], value, self._layers(value, name), self.shape)
            parts.extend(part if isinstance(part, tuple) else [part])
        scales = {k[len(SCALE):]: v for k, v in value.items() if k.startswith(SCALE)}
        return Plan.of(*parts, learning_rate=value.get("learning_rate"), learning_rate_scales=scales,
                       **(pooler_fields(value[POOLER]) if POOLER in value else self.shape.pooler_default))

    def point_of(self, plan: Plan, learning_rate: float) -> dict[str, int] | None:
        """A point of the space that trains as ``plan`` does, at the job's ``learning_rate``; None when the space
        holds none.

        Found by coordinate descent on how many of the plan's settings a point's plan gets wrong, from the
        largest point, the smallest and a few random ones, and kept only when its plan gets none wrong. Where no
        single change gets fewer wrong (a layer switched on with nothing in it, say, keeps the rank a
        neighbouring layer wants from being right), the descent moves sideways to a point it has not seen,
        a few times in a row at most."""
        if not set(plan.methods) <= set(self.methods):
            return None
        wanted = _settings(plan.as_trained(learning_rate))
        names = [d.name for d in self.dimensions]
        sizes = [len(d.choices) for d in self.dimensions]
        wrongs: dict[tuple[int, ...], int] = {}

        def wrong(point: tuple[int, ...]) -> int:
            if point not in wrongs:
                decoded = self.decode(dict(zip(names, point, strict=True)))
                wrongs[point] = len(wanted ^ _settings(decoded.as_trained(learning_rate)))
            return wrongs[point]

        rng = random.Random(0)
        starts = [tuple(k - 1 for k in sizes), tuple(0 for _ in sizes),
                  *(tuple(rng.randrange(k) for k in sizes) for _ in range(_POINT_OF_STARTS))]
        for point in starts:
            best, sideways = wrong(point), 0
            while best:
                improved, level = False, None
                for i, k in enumerate(sizes):
                    for choice in range(k):
                        other = (*point[:i], choice, *point[i + 1:])
                        if other == point:
                            continue
                        seen = other in wrongs
                        w = wrong(other)
                        if w < best:
                            point, best, improved = other, w, True
                        elif w == best and not seen and level is None:
                            level = other
                if improved:
                    sideways = 0
                elif level is None or sideways == _POINT_OF_SIDEWAYS:
                    break
                else:
                    point, sideways = level, sideways + 1
            if not best:
                return dict(zip(names, point, strict=True))
        return None

    def smallest_plan(self, top: bool = False) -> Plan:
        """The cheapest plan that still trains something: one module at its least size in as few layers as
        allowed; the first of them, or with ``top`` the last (the least memory: no backward below it)."""
        layers = self.spec.layers
        n = self.shape.num_layers
        one = (n - 1,) if top else (0,)
        few = one if layers in ("per_layer", "per_module") else tuple(range(n)) if layers == "all" else tuple(layers)
        modules = self.spec.modules
        parts = [method(name).smallest(modules[name], self.shape, few) for name in modules.present()]
        choices = self.spec.pooler_choices()
        pooler = pooler_fields(choices[0]) if choices else self.shape.pooler_default
        return min((Plan.of(p, **pooler) for p in parts if p is not None), key=self.count)

    def largest_plan(self) -> Plan:
        return self.decode({d.name: len(d.choices) - 1 for d in self.dimensions})

    def count(self, plan: Plan) -> int:
        return count_trainable(plan, self.shape)

    @property
    def methods(self) -> tuple[str, ...]:
        """The methods a plan of the space may hold (those chosen per module group included)."""
        return produced(self.spec)


def _settings(plan: Plan) -> set[tuple[str, str]]:
    """A plan's settings as (where, value) pairs, one per list element and layer: two plans with the same
    settings train alike. What ``point_of`` counts as right or wrong."""
    found: set[tuple[str, str]] = set()

    def walk(where: str, value: object) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{where}.{key}", inner)
        elif isinstance(value, list | tuple):
            for item in value:  # an entry over several layers is one setting per layer: split alike, it trains alike
                layers = item.get("layers") if isinstance(item, dict) else None
                found.update((where, json.dumps({**item, "layers": layer} if layers is not None else item, sort_keys=True))
                             for layer in (layers if layers is not None else [None]))
        else:
            found.add((where, json.dumps(value)))

    walk("", plan.to_dict())
    return found


def produced(spec: SpaceFile) -> tuple[str, ...]:
    """The methods whose parts the space file's entries decode into, in the order of their entries."""
    return tuple(dict.fromkeys(m for n in spec.modules.present() for m in method(n).produces(spec.modules[n])))


def load_space(name_or_path: str, shape: ModelShape, learning_rate: float | None = None) -> SearchSpace:
    """Read a space file (built-in name or path), check it against the model and fix its dimensions.

    ``learning_rate`` is the job's: a space that searches the rate (``learning_rate: search``, the
    default) searches it around this one; without it the rate is not a dimension.
    """
    spec, source = read_space_file(name_or_path, shape.family)
    try:
        return build_space(spec, shape, source, learning_rate)
    except UserError as exc:
        if name_or_path not in builtin_spaces():
            raise
        fitting = [name for name in builtin_spaces() if name != name_or_path and _fits(name, shape)]
        also = f"; or a built-in space that fits {shape.family.name} models: {', '.join(fitting)}" if fitting else ""
        raise UserError(exc.field, exc.problem, f"{exc.fix}{also}" if exc.fix else also[2:]) from None


def _fits(name: str, shape: ModelShape) -> bool:
    try:
        build_space(read_space_file(name, shape.family)[0], shape)
    except UserError:
        return False
    return True


def pooler_fields(choice: object) -> dict:
    """A pooler choice of a space (0, a LoRA rank or "full") as ``Plan`` fields."""
    if choice == FULL_POOLER:
        return {"pooler": True}
    return {"pooler_rank": int(choice)}


def searched_rates(spec: SpaceFile, learning_rate: float | None) -> tuple[float, ...]:
    """The learning rates the space searches (none: every plan trains at the job's rate). The job's own rate is
    one of them as written, so that a named baseline at that rate is a point of the space; the others are
    rounded to three significant figures."""
    if isinstance(spec.learning_rate, list):
        return tuple(sorted(spec.learning_rate))
    if spec.learning_rate == "search" and learning_rate is not None:
        return tuple(learning_rate if f == 1 else float(f"{learning_rate * f:.3g}") for f in RATE_FACTORS)
    return ()


def build_space(spec: SpaceFile, shape: ModelShape, source: str = "search space",
                learning_rate: float | None = None) -> SearchSpace:
    dims: list[Dimension] = []
    fixed: dict[str, object] = {}

    def add(name: str, choices: tuple) -> None:
        if len(choices) > 1:
            dims.append(Dimension(name, choices))
        else:
            fixed[name] = choices[0]

    present = spec.modules.present()
    unfit = [n for n in present if not method(n).fits(shape.family)]
    if unfit:
        fitting = [n for n in searchable() if method(n).fits(shape.family)]
        reasons = "; ".join(f"{n}: {method(n).unfit_reason(shape.family)}" for n in unfit)
        raise UserError(f"{source}: modules", f"{', '.join(unfit)} modules do not fit {shape.family.name} models "
                        f"('{shape.model_type}'): {reasons}", f"use only {', '.join(fitting)} with this model")
    claimed: dict[str, str] = {}
    for name in present:
        descriptor, entry = method(name), spec.modules[name]
        try:
            descriptor.check(entry, shape, alone=len(present) == 1)
        except SpaceError as exc:
            raise UserError(f"{source}: {exc.field}", exc.problem, exc.fix) from None
        for group in sorted(descriptor.groups(entry, shape)):
            if group in claimed:
                raise UserError(f"{source}: modules.{name}.groups",
                                f"{method(claimed[group]).title} and {descriptor.title} cannot both adapt '{group}'",
                                "give each module group to one of them")
            claimed[group] = name
        for dimension, choices in descriptor.dimensions(entry, shape):
            add(dimension, choices)
    rates = searched_rates(spec, learning_rate)
    if rates:
        add("learning_rate", rates)
    if spec.pooler is not False:
        if not shape.pooler_params:
            raise UserError(f"{source}: pooler", f"{no_pooler(shape)} (or the task is generation)",
                            "leave pooler out of the space file")
        if shape.pooler_fresh and spec.pooler_choices() != (FULL_POOLER,):
            raise UserError(f"{source}: pooler", f"the checkpoint holds no pooler weights, so its pooler starts at "
                            f"random and every plan trains it whole ({shape.model_type} models saved from pre-training)",
                            "leave pooler out of the space file")
        widest = shape.pooler_rank_limit
        too_wide = [r for r in spec.pooler_choices() if r != FULL_POOLER and r > widest]
        if too_wide:
            raise UserError(f"{source}: pooler", f"LoRA rank {too_wide[0]} is larger than the pooler's width {widest}",
                            f"use ranks of at most {widest}")
        add(POOLER, spec.pooler_choices())
    if spec.method_learning_rates:
        for name in produced(spec):
            add(f"{SCALE}{name}", method(name).learning_rate_choices(spec.method_learning_rates))
    if isinstance(spec.layers, list):
        outside = [i for i in spec.layers if i < 0 or i >= shape.num_layers]
        if outside:
            raise UserError(f"{source}: layers", f"layer {outside[0]} is outside the model, which has layers 0 to {shape.num_layers - 1}",
                            f"use layer indices from 0 to {shape.num_layers - 1}")
    elif spec.layers == "per_layer":
        dims.extend(Dimension(f"layer.{i}", (0, 1)) for i in range(shape.num_layers))
    elif spec.layers == "per_module":
        for module in present:
            dims.extend(Dimension(f"{module}.layer.{i}", (0, 1)) for i in range(shape.num_layers))
    if not dims:
        raise UserError(f"{source}", "the space has no dimension: every choice is fixed", "give at least one field two or more choices")
    return SearchSpace(spec=spec, shape=shape, dimensions=tuple(dims), fixed=fixed)
