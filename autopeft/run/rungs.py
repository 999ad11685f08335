"""Asynchronous successive halving over two objectives (MO-ASHA, Schmucker et al. 2021): which trial goes on.

A search with ``fidelity.schedule: asha`` trains each new trial up to its first rung (a fraction of
the fidelity's steps) and pauses it. Whenever a worker is free, the highest rung with a paused
trial among its top ``1 / reduction_factor`` goes first: that trial continues from its checkpoint
to the next rung. Trials rank by non-dominated sorting of (quality, trainable parameters) and,
within one front, by the hypervolume each adds (against the rung's own worst point). A trial still
at or under the search's quality floor (the reference point's: the majority label's rate, a base
model's zero-shot score) ranks after every trial above it: however cheap, it adds nothing to the
search's front, and a cheap one would otherwise sit on the rung's first front. Early in training
many trials tie on a coarse metric (accuracy at the majority label's rate): equal qualities are
told apart by the validation loss. There is no barrier between rungs; a trial is never promoted
twice from one rung. The pure functions here decide; the search loop runs them.

Short trainings favour plans that learn fast: a plan at a low learning rate may still score the
majority label's rate at the first rung and be stopped there, however well it would train to the
end. With ``fidelity.brackets: n`` new trials are spread over n brackets in Hyperband's shares (Li
et al. 2018): a trial of bracket b goes on past the first b rungs unranked, and is ranked, among
the trials ranked there, from rung b on; with as many brackets as rungs, some trials train to the
end whatever their first rungs said. Every rung a trial finishes is still scored and recorded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from autopeft.record.pareto import Point, Reference, hypervolume, nondominated_fronts
from autopeft.record.study import ranked_at


def ranked(points: list[Point], reference: Reference) -> list[int]:
    """Trial numbers from the best to the worst: front by front, each by the hypervolume its points add."""
    order = []
    for front in nondominated_fronts(points):
        whole = hypervolume(front, reference)

        def added(point: Point) -> float:
            return whole - hypervolume([p for p in front if p is not point], reference)

        order += [p.trial for p in sorted(front, key=lambda p: (-added(p), p.params, p.trial))]
    return order


@dataclass(frozen=True)
class RungTrial:
    """A trial of a search with rungs: the quality after each rung it finished, the rung it was last sent to."""

    trial: int
    params: int
    qualities: tuple[float, ...]
    sent_to: int
    paused: bool  # finished the rung it was sent to and waits: neither running, failed nor pruned
    losses: tuple[float | None, ...] = ()  # the validation loss after each rung, where the trainer reports one
    bracket: int = 0  # ranked from this rung on; sent on unranked from the rungs before it

    def rank_quality(self, rung: int) -> float:
        """The rung's quality, less a nudge by its validation loss far below the metric's resolution."""
        loss = self.losses[rung] if rung < len(self.losses) else None
        return self.qualities[rung] - (LOSS_NUDGE * min(loss, 1e3) if loss is not None and math.isfinite(loss) else 0.0)


LOSS_NUDGE = 1e-7  # a loss of 1 moves the quality by 1e-7: it only orders trials whose metric ties


def next_promotion(trials: list[RungTrial], rungs: int, factor: int, floor: float = -math.inf) -> tuple[int, int] | None:
    """(trial, rung) of the paused trial to send on, from the highest rung down; None while none qualifies.

    ``floor`` is the search's quality floor: the trials of a rung at or under it rank after the others.
    """
    for rung in reversed(range(rungs - 1)):
        for t in trials:
            if not ranked_at(rung, t.bracket) and t.sent_to == rung and t.paused:
                return t.trial, rung + 1
        reached = [t for t in trials if len(t.qualities) > rung and ranked_at(rung, t.bracket)]
        top = len(reached) // factor
        if top == 0:
            continue
        by_number = {t.trial: t for t in reached}
        above = [t for t in reached if t.qualities[rung] > floor]
        order = _ranked_at(above, rung) + _ranked_at([t for t in reached if t.qualities[rung] <= floor], rung)
        for number in order[:top]:
            candidate = by_number[number]
            if candidate.sent_to == rung and candidate.paused:
                return number, rung + 1
    return None


def _ranked_at(trials: list[RungTrial], rung: int) -> list[int]:
    """``ranked`` over the trials' qualities at ``rung``, against the worst of them."""
    if not trials:
        return []
    points = [Point(trial=t.trial, quality=t.rank_quality(rung), params=t.params, pct=0.0) for t in trials]
    low, high = min(p.quality for p in points), max(p.quality for p in points)
    worst = Reference(quality=low - 0.1 * (high - low or 1e-12), params=int(1.1 * max(p.params for p in points)) + 1)
    return ranked(points, worst)


GOLDEN = (math.sqrt(5) - 1) / 2


def bracket_of(number: int, brackets: int, rungs: int, factor: int) -> int:
    """The bracket of trial ``number``: the rung from which it is ranked.

    Bracket b holds Hyperband's share of the new trials, ceil((R + 1) * factor**s / (s + 1)) for
    s = R - b, R = rungs - 1 (9, 5 and 3 in 17 for three rungs and factor 3). Trial numbers are
    spread over the shares by the golden ratio's sequence: evenly at every length of a search, and
    the same on every resume.
    """
    if brackets <= 1:
        return 0
    top = rungs - 1
    shares = [math.ceil((top + 1) * factor ** (top - b) / (top - b + 1)) for b in range(brackets)]
    at = ((number + 0.5) * GOLDEN) % 1.0 * sum(shares)
    for bracket, share in enumerate(shares):
        if at < share:
            return bracket
        at -= share
    return brackets - 1
