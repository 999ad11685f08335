"""The methods with one size per point (bottleneck adapters, prefixes): their space entry and decoding."""

from __future__ import annotations

from pydantic import model_validator

from ..types import LayerSizes, SpaceError, Strict
from .base import Method, check_sizes


class SizedSpace(Strict):
    """A module with one size per point: ``sizes`` in units, or ``size_fractions`` of the model width."""

    sizes: list[int] | None = None
    size_fractions: list[float] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> SizedSpace:
        if (self.sizes is None) == (self.size_fractions is None):
            raise ValueError("give exactly one of 'sizes' or 'size_fractions'")
        if self.sizes is not None:
            check_sizes(self.sizes, "sizes")
        elif any(f < 0 or f > 1 for f in self.size_fractions):
            raise ValueError("size_fractions must lie between 0 and 1")
        return self

    def choices(self, width: int) -> tuple[int, ...]:
        if self.sizes is not None:
            return tuple(sorted(self.sizes))
        return tuple(sorted({0 if f == 0 else max(1, round(f * width)) for f in self.size_fractions}))


class SizedMethod(Method):
    """A method whose space entry is one ``<name>.size`` dimension, the same size in every chosen layer."""

    space = SizedSpace
    bounded_by_width = True  # a size above the model width is refused

    def check(self, spec: SizedSpace, shape, alone: bool) -> None:
        choices = spec.choices(shape.hidden_size)
        if self.bounded_by_width and max(choices) > shape.hidden_size:
            raise SpaceError(f"modules.{self.name}.sizes", f"size {max(choices)} is larger than the model width {shape.hidden_size}",
                             f"use sizes of at most {shape.hidden_size}")

    def dimensions(self, spec: SizedSpace, shape) -> list[tuple[str, tuple]]:
        return [(f"{self.name}.size", spec.choices(shape.hidden_size))]

    def decode(self, spec: SizedSpace, value, layers, shape):
        size = value[f"{self.name}.size"]
        return self.make(spec, tuple((i, size) for i in layers)) if size and layers else None

    def smallest(self, spec: SizedSpace, shape, layers):
        positive = [s for s in spec.choices(shape.hidden_size) if s > 0]
        return self.make(spec, tuple((i, min(positive)) for i in layers)) if positive else None

    def make(self, spec: SizedSpace, sizes: LayerSizes):
        """The part with ``sizes`` in the layers that have the module."""
        raise NotImplementedError
