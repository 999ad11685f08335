"""autopeft's sampler against Optuna's samplers, in the same run, on PEFT-like problems.

    python benchmarks/optimizer.py                  # the full comparison (about an hour on 2 cores)
    python benchmarks/optimizer.py --seeds 2 --budgets 10 20 --problems zdt1-grid   # a quick look

Problems, each a grid of module sizes and per-layer bits whose cost (trainable parameters) is
exact and known to autopeft's sampler, while quality is a black box:

- ``zdt1-grid``, ``zdt2-grid``: BoTorch's ZDT1 and ZDT2 on a grid of 4 modules (5 sizes each) x 6
  layer bits, with a hard budget of half the largest cost. The first ZDT input is cost / budget;
  the others are each dimension's distance to a hidden target setting. Quality is -f2.
- the real-trial benchmarks: a job's search space, cost counted exactly by autopeft, quality
  predicted by a random forest fitted on that job's real trials (``benchmarks/data/<job>.csv``,
  collected by ``benchmarks/collect_trials.py``):
  - ``peft-surrogate``: the 37-dimension ``mixed`` space on MiniLM-L6 + Rotten Tomatoes
    (``jobs/surrogate_data.yaml``);
  - ``debates-lora``: LoRA ranks per group and half, a bit per layer and the learning rate
    (19 dimensions) on MiniLM-L6, who speaks in the 2016 US presidential debates
    (``jobs/debates_lora.yaml``);
  - ``debates-mixed``: the shipped ``mixed`` space (LoRA, IA3, serial and parallel adapters,
    prefix, each placed per layer, and the learning rate scaled per method: 38 dimensions) on
    the same debates task at one epoch (``jobs/debates_mixed.yaml``);
  - ``rotten-lora``: the space of ``debates-lora`` on MiniLM-L6 + Rotten Tomatoes
    (``jobs/rotten_lora_trials.yaml``): one space on a second task;
  - any other job file whose trials ``collect_trials.py`` has collected, given by its path
    (``--problems my_job.yaml``): a benchmark of the user's own model, task and space.

Each search runs to the largest budget; the hypervolume at a smaller budget is that of its first
trials. Hypervolume is normalised by that of the best front any run found on the problem. With
4 in parallel, four trials run at a time and finish in the order they started; a sampler sees
the other three as running trials. Proposals over the budget (or empty), and proposals of a plan
already trained under other choices, are not trained and do not count as trials, as in
``autopeft submit``. The forest sees each plan in one form (the choices it does not use at their
first level), so a plan scores the same however it was proposed, as a real training would.

With ``--baselines`` each search also has the named baselines whose plans are points of its
space (``lora-r8`` in a LoRA space), scored by the forest before the first trial, as ``autopeft
submit`` runs them beside the search; ``autopeft`` runs both ways: as the sampler is
(``autopeft+baselines``: it learns from them and never proposes their plans) and blind to them
(``autopeft``). Every hypervolume is then that of the trials and the baselines together: what a
user has trained.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from collections import deque
from dataclasses import dataclass, field, replace
from functools import cache
from multiprocessing import Pool
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")

import optuna  # noqa: E402
import torch  # noqa: E402

from autopeft.errors import UserError  # noqa: E402
from autopeft.optimize.domain import Domain, point_key, space_domain  # noqa: E402
from autopeft.optimize.propose import Proposer  # noqa: E402
from autopeft.optimize.registry import SAMPLERS, make_sampler  # noqa: E402
from autopeft.record.pareto import Point, Reference, hypervolume  # noqa: E402
from autopeft.record.study import BASELINES, DIRECTIONS, StudyRecord  # noqa: E402

HERE = Path(__file__).parent
OUT = HERE / "out"
REAL = {"peft-surrogate": "surrogate_data.yaml", "debates-lora": "debates_lora.yaml", "debates-mixed": "debates_mixed.yaml",
        "rotten-lora": "rotten_lora_trials.yaml"}  # problem: job file
PROBLEMS = ("zdt1-grid", "zdt2-grid", *REAL)
N_STARTUP = 10


@dataclass(frozen=True)
class Problem:
    name: str
    domain: Domain
    quality: object  # (n, d) choice indices -> n qualities
    fit: dict | None = None  # a real-trial surrogate's 5-fold cross-validated fit: trials, r2, spearman
    baselines: dict[str, tuple[int, ...]] = field(default_factory=dict)  # the named baselines that are points of the space

    @property
    def reference(self) -> Reference:
        floor, ceiling = self.domain.reference
        return Reference(quality=floor, params=int(ceiling))


def _grid_problem(name: str) -> Problem:
    from botorch.test_functions.multi_objective import ZDT1, ZDT2

    modules, layers = 4, 6
    sizes, weights = np.array([0, 1, 2, 4, 8]), np.array([1.0, 2.0, 3.0, 5.0])
    levels = np.array((len(sizes),) * modules + (2,) * (modules * layers))
    names = tuple([f"m{m}.size" for m in range(modules)] + [f"m{m}.layer.{i}" for m in range(modules) for i in range(layers)])
    budget = sizes[-1] * weights.sum() * layers / 2
    rng = np.random.default_rng(17)
    target = rng.integers(levels) / (levels - 1)
    function = {"zdt1-grid": ZDT1, "zdt2-grid": ZDT2}[name](dim=len(levels) + 1)

    def cost(points: np.ndarray) -> np.ndarray:
        points = np.asarray(points)
        per_layer = sizes[points[:, :modules]] * weights
        placed = points[:, modules:].reshape(len(points), modules, layers).sum(-1)
        total = (per_layer * placed).sum(-1).astype(float)
        total[total == 0] = np.nan
        return total

    def quality(points: np.ndarray) -> np.ndarray:
        x = np.column_stack([np.clip(np.nan_to_num(cost(points)) / budget, 0, 1),
                             np.abs(np.asarray(points) / (levels - 1) - target)])
        return -function.evaluate_true(torch.as_tensor(x)).numpy()[:, 1]

    domain = Domain(names, tuple(int(k) for k in levels), cost, max_cost=budget)
    sample = _feasible_sample(domain, rng)
    floor = float(quality(sample).min())
    return Problem(name, Domain(names, domain.levels, cost, budget, (floor, budget + 1)), quality)


def _feasible_sample(domain: Domain, rng: np.random.Generator, n: int = 4096) -> np.ndarray:
    points = rng.integers(np.asarray(domain.levels), size=(n, len(domain.levels)))
    return points[domain.feasible(points)]


def _canonical(domain: Domain):
    """Points to one point per plan: each choice the plan does not use (the rank of a group placed in
    no layer) set to its first level, so that a surrogate scores every point of one plan alike."""
    cache: dict[bytes, np.ndarray] = {}

    def of(points: np.ndarray) -> np.ndarray:
        out = np.array(points, dtype=np.int64)
        for row in out:
            key = point_key(row)
            if key not in cache:
                plan, same = domain.plan_keys(row[None])[0], row.copy()
                for d in np.flatnonzero(same):
                    trial = same.copy()
                    trial[d] = 0
                    if domain.plan_keys(trial[None])[0] == plan:
                        same = trial
                cache[key] = same
            row[:] = cache[key]
        return out

    return of


def _real_problem(name: str) -> Problem:
    """A job's space with its exact cost, and a random forest of quality fitted on the job's real trials."""
    from scipy.stats import spearmanr
    from sklearn.ensemble import RandomForestRegressor

    from autopeft.job.load import load_job
    from autopeft.space.search_space import load_space
    from autopeft.workers.methods.base import baseline_plan, every_baseline
    from autopeft.workers.models import model_shape

    job = load_job(HERE / "jobs" / REAL[name] if name in REAL else Path(name))
    data = HERE / "data" / f"{job.name}.csv"
    if not data.is_file():
        raise SystemExit(f"{name}: no real trials of the job '{job.name}' in {data}: collect them first with "
                         f"python benchmarks/collect_trials.py {name}")
    rows = list(csv.DictReader(data.open()))
    shape = model_shape(job.model, int(rows[0]["num_labels"]))
    space = load_space(job.search_space, shape, job.fidelity.learning_rate)
    names = tuple(d.name for d in space.dimensions)
    x = np.array([[int(r[n]) for n in names] for r in rows])
    y = np.array([float(r["quality"]) for r in rows])
    floor = float(rows[0]["quality_floor"])
    ceiling = space.count(space.largest_plan()) + 1
    domain = space_domain(space, None, Reference(floor, ceiling))
    counted = domain.cost(x)
    if not np.array_equal(counted, [float(r["trainable_params"]) for r in rows]):
        raise SystemExit(f"{name}: the space no longer counts the collected trials' parameters; collect them again")

    canonical = _canonical(domain)

    def features(points: np.ndarray) -> np.ndarray:
        return np.column_stack([canonical(points), np.log1p(np.nan_to_num(domain.cost(points)))])

    def forest_of(rows: np.ndarray) -> RandomForestRegressor:
        return RandomForestRegressor(n_estimators=200, min_samples_leaf=2, random_state=0).fit(features(x[rows]), y[rows])

    forest = forest_of(np.arange(len(y)))
    folds = np.arange(len(y)) % 5
    held_out = np.empty(len(y))
    for k in range(5):
        held_out[folds == k] = forest_of(np.flatnonzero(folds != k)).predict(features(x[folds == k]))
    fit = {"trials": len(y), "r2": 1 - np.mean((held_out - y) ** 2) / np.var(y),
           "spearman": float(spearmanr(held_out, y).statistic)}

    def quality(points: np.ndarray) -> np.ndarray:
        return forest.predict(features(np.asarray(points)))

    held = {}
    for baseline in every_baseline():
        point = space.point_of(baseline_plan(baseline, shape), job.fidelity.learning_rate)
        if point is not None:
            held[baseline] = tuple(point[n] for n in names)
    return Problem(name, domain, quality, fit, held)


@cache
def problem(name: str) -> Problem:
    return _real_problem(name) if is_real(name) else _grid_problem(name)


def is_real(name: str) -> bool:
    """Whether the problem is a real-trial benchmark: one of ``REAL``, or a job file given by its path."""
    return name in REAL or name.endswith((".yaml", ".yml"))


def _problem_arg(value: str) -> str:
    if value in PROBLEMS or (is_real(value) and Path(value).is_file()):
        return value
    raise argparse.ArgumentTypeError(f"{value!r} is neither one of {', '.join(PROBLEMS)} nor a job file (.yaml) that exists")


def _sampler(name: str, prob: Problem, seed: int) -> optuna.samplers.BaseSampler:
    return make_sampler(name, seed, N_STARTUP, prob.domain)


def run_search(problem_name: str, sampler_name: str, seed: int, parallel: int, trials: int, baselines: str = "") -> dict:
    """One search; returns its trials' (quality, cost) in finishing order and its ask latencies.
    ``baselines``: "" (none), "blind" (they run, the sampler does not know them) or "known"."""
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    prob = problem(problem_name)
    held = prob.baselines if baselines else {}
    points = np.asarray(list(held.values()), dtype=np.int64).reshape(len(held), len(prob.domain.levels))
    scored = [(float(q), float(c)) for q, c in zip(prob.quality(points), prob.domain.cost(points), strict=True)] if held else []
    if baselines == "known":
        prob = replace(prob, domain=replace(prob.domain, baselines=held))
    study = optuna.create_study(directions=DIRECTIONS, sampler=_sampler(sampler_name, prob, seed))
    study.set_user_attr(BASELINES, {name: {"quality": q, "params": c} for name, (q, c) in zip(held, scored, strict=True)})
    proposer = Proposer(study, prob.domain, seed, max_skips=50 * trials, trained_as=StudyRecord(study).trained_as)
    running: deque = deque()
    done: list[tuple[float, float]] = []
    asks: list[tuple[int, float]] = []
    while len(done) < trials:
        while len(running) < parallel and len(done) + len(running) < trials:
            start = time.perf_counter()
            proposal = proposer.next()
            asks.append((len(done), time.perf_counter() - start))
            running.append(proposal)
        proposal = running.popleft()
        quality = float(prob.quality(prob.domain.point(proposal.trial.params))[0])
        study.tell(proposal.trial, [quality, proposal.cost])
        done.append((quality, proposal.cost))
    return {"problem": problem_name, "sampler": sampler_name, "seed": seed, "parallel": parallel,
            "trials": done, "asks": asks, "skipped": proposer.skips, "baselines": baselines, "baseline_points": scored}


def ask_latency(problem_name: str, sampler_name: str, observed: int, asks: int = 10) -> dict:
    """Seconds per ask once ``observed`` random feasible trials are in the study.

    The first ask after the fill is timed apart: it is the only one that fits the GP from scratch.
    """
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    prob = problem(problem_name)
    study = optuna.create_study(directions=DIRECTIONS, sampler=_sampler(sampler_name, prob, 0))
    distributions = prob.domain.distributions()
    points = _feasible_sample(prob.domain, np.random.default_rng(observed))[:observed]
    for point, quality, cost in zip(points, prob.quality(points), prob.domain.cost(points), strict=True):
        study.add_trial(optuna.trial.create_trial(
            params={n: int(v) for n, v in zip(prob.domain.names, point, strict=True)},
            distributions=distributions, values=[float(quality), float(cost)]))
    times = []
    for _ in range(asks + 1):
        start = time.perf_counter()
        trial = study.ask(distributions)
        times.append(time.perf_counter() - start)
        point = np.array([[trial.params[n] for n in prob.domain.names]])
        cost = prob.domain.cost(point)
        value = float(prob.quality(point)[0]) if prob.domain.feasible(point, cost)[0] else prob.domain.reference[0]
        study.tell(trial, [value, float(np.nan_to_num(cost[0]))])
    return {"problem": problem_name, "sampler": sampler_name, "observed": observed, "first": times[0], "times": times[1:]}


def _hv(trials, reference: Reference) -> float:
    return hypervolume([Point(trial=i, quality=q, params=int(c), pct=0.0) for i, (q, c) in enumerate(trials)], reference)


def _call(args):
    kind, *rest = args
    return run_search(*rest) if kind == "search" else ask_latency(*rest)


def _key(record: dict) -> str:
    if "observed" in record:
        return f"latency/{record['problem']}/{record['sampler']}/{record['observed']}"
    return (f"search/{record['problem']}/{record['sampler']}/{record['seed']}/{record['parallel']}/{len(record['trials'])}"
            + (f"/{record['baselines']}" if record.get("baselines") else ""))


def _label(record: dict) -> str:
    """A search's row: its sampler, ``+baselines`` where it knew them."""
    return record["sampler"] + ("+baselines" if record.get("baselines") == "known" else "")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), type=_problem_arg,
                        help=f"{', '.join(PROBLEMS)}, or the path of a job file whose trials collect_trials.py collected")
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=SAMPLERS)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budgets", type=int, nargs="+", default=[20, 50, 100])
    parser.add_argument("--parallel", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--random-budget", type=int, default=200, help="random search's own longer budget, for the targets")
    parser.add_argument("--latency", type=int, nargs="*", default=[50, 200], help="observed trials at which to time asks")
    parser.add_argument("--short", nargs="*", default=["gp"],
                        help="samplers run only to the middle budget and one trial at a time (Optuna's GPSampler: about 1 s per ask)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--baselines", action="store_true",
                        help="the named baselines each space holds run before the search; autopeft runs knowing them and blind to them")
    args = parser.parse_args(argv)
    for name in args.problems:  # built once here, before any search: a job file's mistake stops the run with its message
        try:
            problem(name)
        except UserError as exc:
            raise SystemExit(f"{name}: {exc}") from None
    args.out.mkdir(parents=True, exist_ok=True)
    store = args.out / "optimizer_runs.jsonl"
    records = {}
    if store.exists():
        for line in store.read_text().splitlines():
            record = json.loads(line)
            records[_key(record)] = record
    top = max(args.budgets)
    jobs = []
    for name in args.problems:
        for sampler in args.samplers:
            for parallel in args.parallel:
                if parallel != 1 and (sampler == "random" or sampler in args.short):
                    continue  # random search ignores running trials: the same points in any order
                trials = max(top, args.random_budget) if sampler == "random" else top
                if sampler in args.short:
                    trials = sorted(args.budgets)[len(args.budgets) // 2]
                ways = (["blind", "known"] if sampler == "autopeft" else ["blind"]) if args.baselines else [""]
                jobs += [("search", name, sampler, seed, parallel, trials, way) for seed in range(args.seeds) for way in ways]
            jobs += [("latency", name, sampler, n) for n in args.latency]
    todo = [j for j in jobs if _job_key(j) not in records]
    todo.sort(key=lambda j: (j[2] not in ("autopeft", "gp"), -(j[-1] if j[0] == "latency" else j[5])))
    print(f"{len(jobs)} runs, {len(jobs) - len(todo)} already in {store}", file=sys.stderr)
    started = time.time()
    with Pool(args.workers) as pool, store.open("a") as sink:
        for i, record in enumerate(pool.imap_unordered(_call, todo), 1):
            records[_key(record)] = record
            sink.write(json.dumps(record) + "\n")
            sink.flush()
            print(f"  {i}/{len(todo)} {_key(record)} ({time.time() - started:.0f} s)", file=sys.stderr)
    report(args, [records[_job_key(j)] for j in jobs])


def _job_key(job: tuple) -> str:
    if job[0] == "latency":
        return f"latency/{job[1]}/{job[2]}/{job[3]}"
    return f"search/{job[1]}/{job[2]}/{job[3]}/{job[4]}/{job[5]}" + (f"/{job[6]}" if job[6] else "")


def report(args, records: list[dict]) -> None:
    searches = [r for r in records if "trials" in r]
    latencies = [r for r in records if "observed" in r]
    budgets = sorted(set(args.budgets))
    lines = [f"Normalised hypervolume, median [25%, 75%] over {args.seeds} seeds "
             "(1.0 = the best front any run found on the problem)"
             + (", of the trials and the baselines each space holds together" if args.baselines else ""), ""]
    header = "| problem | sampler | parallel | " + " | ".join(f"{b} trials" for b in budgets) + " |"
    lines += [header, "|" + "---|" * (3 + len(budgets))]
    medians: dict[tuple, float] = {}
    curves: dict[tuple, np.ndarray] = {}
    for name in args.problems:
        ref = problem(name).reference
        runs = [r for r in searches if r["problem"] == name]
        best = _hv([t for r in runs for t in r["trials"] + r.get("baseline_points", [])], ref)
        labels = [label for s in args.samplers for label in (s, f"{s}+baselines") if any(_label(r) == label for r in runs)]
        for sampler in labels:
            for parallel in args.parallel:
                mine = [r for r in runs if _label(r) == sampler and r["parallel"] == parallel]
                if not mine:
                    continue
                cells = []
                steps = sorted(set(budgets + ([args.random_budget] if sampler == "random" else [])))
                for b in steps:
                    if b > min(len(r["trials"]) for r in mine):
                        cells.append("-")
                        continue
                    values = np.array([_hv(r["trials"][:b] + r.get("baseline_points", []), ref) / best for r in mine])
                    q1, med, q3 = np.percentile(values, [25, 50, 75])
                    medians[(name, sampler, parallel, b)] = med
                    cells.append(f"{med:.3f} [{q1:.3f}, {q3:.3f}]")
                curve = np.array([[_hv(r["trials"][:n] + r.get("baseline_points", []), ref) / best
                                   for n in range(1, len(r["trials"]) + 1)] for r in mine])
                curves[(name, sampler, parallel)] = curve
                extra = f" (at {args.random_budget}: {cells[-1]})" if sampler == "random" and len(steps) > len(budgets) else ""
                lines.append(f"| {name} | {sampler} | {parallel} | " + " | ".join(cells[: len(budgets)]) + f" |{extra}")
    first = min(budgets)
    if first > N_STARTUP:
        lines += ["", f"Where the hypervolume at {first} trials comes from (means over seeds, one trial at a time): "
                  f"the first {N_STARTUP} trials (every sampler's initial design), then the model's", "",
                  f"| problem | sampler | after {N_STARTUP} trials | gained up to {first} | "
                  f"of which trial {N_STARTUP + 1} | of which trials {N_STARTUP + 2} to {first} |", "|---|---|---|---|---|---|"]
        for (name, sampler, parallel), curve in curves.items():
            if parallel == 1 and curve.shape[1] >= first:
                design, next_one, end = (curve[:, i].mean() for i in (N_STARTUP - 1, N_STARTUP, first - 1))
                lines.append(f"| {name} | {sampler} | {design:.3f} | {end - design:.3f} | {next_one - design:.3f} | {end - next_one:.3f} |")
    fits = [(name, problem(name).fit) for name in args.problems if problem(name).fit]
    if fits:
        lines += ["", "Real-trial surrogates: 5-fold cross-validated fit of the random forest on the trials", "",
                  "| problem | trials | R^2 | Spearman |", "|---|---|---|---|"]
        lines += [f"| {name} | {f['trials']} | {f['r2']:.2f} | {f['spearman']:.2f} |" for name, f in fits]
    lines += ["", "Seconds per ask (2 CPU cores, one search per core)", "",
              "| problem | sampler | observed | median | p95 | first ask |", "|---|---|---|---|---|---|"]
    for r in latencies:
        t = np.array(r["times"])
        lines.append(f"| {r['problem']} | {r['sampler']} | {r['observed']} | {np.median(t):.2f} | "
                     f"{np.percentile(t, 95):.2f} | {r['first']:.2f} |")
    lines += ["", "Targets", ""] + _targets(args, medians, latencies)
    text = "\n".join(lines)
    print(text)
    (args.out / "optimizer.md").write_text(text + "\n")
    _plot(args, curves, args.out / "optimizer.png")
    print(f"\nwrote {args.out / 'optimizer.md'} and {args.out / 'optimizer.png'}", file=sys.stderr)


def _targets(args, medians: dict, latencies: list[dict]) -> list[str]:
    out = []
    mid = 50 if 50 in args.budgets else sorted(args.budgets)[len(args.budgets) // 2]
    others = [s for s in args.samplers if s != "autopeft"]
    for name in args.problems:
        mine = medians.get((name, "autopeft", 1, mid))
        if mine is None:
            continue
        rnd = medians.get((name, "random", 1, args.random_budget))
        if rnd is not None:
            out.append(f"- {name}: autopeft at {mid} {mine:.3f} vs random at {args.random_budget} {rnd:.3f}: "
                       f"{'met' if mine >= rnd else 'NOT met'}")
        rivals = {s: medians[(name, s, 1, mid)] for s in others if (name, s, 1, mid) in medians}
        if rivals:
            best = max(rivals, key=rivals.get)
            out.append(f"- {name}: autopeft at {mid} {mine:.3f} vs best Optuna sampler ({best}) {rivals[best]:.3f}: "
                       f"{'met' if mine >= rivals[best] else 'NOT met'}")
        for parallel in args.parallel:
            if parallel == 1 or (name, "autopeft", parallel, mid) not in medians:
                continue
            loss = 1 - medians[(name, "autopeft", parallel, mid)] / mine
            out.append(f"- {name}: {parallel} in parallel loses {100 * loss:.1f}% at {mid}: "
                       f"{'met' if loss <= 0.10 else 'NOT met'} (at most 10%)")
    ratios = []
    for name in [n for n in args.problems if is_real(n)]:
        for b in (20, 50):
            mine, gp = medians.get((name, "autopeft", 1, b)), medians.get((name, "gp", 1, b))
            if mine is None or gp is None:
                continue
            out.append(f"- {name}: autopeft at {b} {mine:.3f} vs GPSampler {gp:.3f}: {'met' if mine >= gp else 'NOT met'}")
            if b == 20:
                ratios.append(mine / gp)
    if ratios:
        mean = float(np.mean(ratios))
        out.append(f"- real-trial benchmarks: autopeft / GPSampler at 20 trials, averaged: {mean:.3f}: "
                   f"{'met' if mean >= 1.05 else 'NOT met'} (at least 1.05)")
    for r in latencies:
        if r["sampler"] == "autopeft":
            p95 = np.percentile(r["times"], 95)
            out.append(f"- {r['problem']}: ask p95 {p95:.2f} s at {r['observed']} observed: "
                       f"{'met' if p95 < 2 else 'NOT met'} (under 2 s)")
    return out


def _plot(args, curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(args.problems), figsize=(5 * len(args.problems), 4), squeeze=False)
    colours = dict(zip(SAMPLERS, ["#d62728", "#9467bd", "#7f7f7f", "#2ca02c", "#1f77b4"], strict=True))
    for ax, name in zip(axes[0], args.problems, strict=True):
        for (prob, sampler, parallel), curve in curves.items():
            if prob != name:
                continue
            n = np.arange(1, curve.shape[1] + 1)
            q1, med, q3 = np.percentile(curve, [25, 50, 75], axis=0)
            style = "-" if parallel == 1 else "--"
            colour = colours[sampler.removesuffix("+baselines")]
            ax.plot(n, med, ":" if sampler.endswith("+baselines") else style, color=colour,
                    label=f"{sampler}" + (f" x{parallel}" if parallel > 1 else ""))
            if parallel == 1:
                ax.fill_between(n, q1, q3, color=colour, alpha=0.12)
        ax.set_title(name)
        ax.set_xlabel("trials")
        ax.set_ylabel("normalised hypervolume")
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
