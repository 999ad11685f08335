"""What a job would search, before it runs: ``autopeft check``.

Everything here reads the job, its model's shape and tokenizer (never its weights), its data, its
space and, where its run directory holds a search, that search's job; nothing is trained or
started, and no run directory or store is written.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from autopeft.job.spec import FLOORS
from autopeft.optimize.domain import MemoryLimit, space_domain
from autopeft.record.pareto import counted
from autopeft.record.study import StudyRecord
from autopeft.run.pool import cluster_address
from autopeft.run.prepare import Prepared, check_resume
from autopeft.workers.metrics import majority_score

DRAWS = 1000  # random points of the space drawn to tell how much of it the budget leaves
# optimizer steps under which a new classification head mostly still predicts the majority label
# (MiniLM-L6 on 151 to 1,000 examples: none of 4 plans learned in 5 or 19 steps, one in 38)
SHORT_TRAINING = 30
LENGTH_SAMPLE = 1000  # training examples whose tokens are counted
LOPSIDED = 0.8  # the majority label's accuracy from which accuracy is a poor measure
COARSE = 0.03  # a share's standard error (at 0.5) from which a trial's score ranks close plans by chance


@dataclass(frozen=True)
class PlanSize:
    """One plan as the search would train it: its exact trainable count and estimated peak memory."""

    params: int
    pct: float
    memory_gb: float
    plan: str


@dataclass(frozen=True)
class Lengths:
    """Tokens of up to ``LENGTH_SAMPLE`` training examples, whole; ``cut``: the share longer than
    ``fidelity.max_seq_length``, which trials cut to it."""

    examples: int
    median: int
    p95: int
    cut: float


@dataclass(frozen=True)
class JobCheck:
    """A job as it would run. ``within`` is the share of random trainable plans of the space that the
    budget (trainable parameters, memory) allows, out of ``draws``; ``quality_floor`` is None where
    the base model's zero-shot score is measured at the start."""

    job: str
    model: str
    family: str
    model_type: str
    layers: int
    hidden_size: int
    parameters: int
    task_type: str
    metric: str
    labels: list[str]
    train_examples: int
    validation_examples: int
    test_examples: int  # held out from the search, scored by the re-evaluation
    quality_floor: float | None
    floor: str  # "majority", "given" or "zero-shot"
    space: str
    dimensions: int
    points: int
    smallest: PlanSize
    largest: PlanSize
    max_trainable_params: int | None
    max_memory_gb: float | None
    draws: int
    within: float
    baselines: dict[str, PlanSize]
    baselines_in_space: list[str]  # those that are points of the space: the autopeft sampler learns from them
    trials: int
    parallel: int
    sampler: str
    schedule: str
    seed: int
    gpus_per_trial: float
    run_dir: str
    run_dir_exists: bool
    train_steps: int  # optimizer steps of one whole trial
    trial_examples: int  # training examples one trial draws
    batch_size: int
    base_dtype: str
    epochs: float
    lengths: Lengths
    cautions: list[str]  # what would keep the search from telling plans apart (``cautions``)
    final_seeds: int = 0  # new seeds of each re-evaluated point and baseline after the search (0: none)
    final_fronts: int = 1  # the search's non-dominated fronts whose points are re-evaluated
    final_steps: int = 0  # optimizer steps of one re-training
    warm_start: str | None = None  # the earlier search whose front opens the initial design
    warm_points: int = 0  # the points of its front that do, mapped onto this space (but for a baseline's plan)
    startup_trials: int = 0  # the initial design's trials

    def to_dict(self) -> dict:
        return asdict(self)


def check_job(prepared: Prepared, draws: int = DRAWS) -> JobCheck:
    """The job as it would run: model, data, space and how much of it the budget allows, memory, baselines."""
    job, shape, space, data = prepared.job, prepared.shape, prepared.space, prepared.data
    in_space = prepared.baseline_points()
    domain = space_domain(space, prepared.max_params, memory_gb=prepared.memory_gb,
                          memory_limit=MemoryLimit(job.budget.max_memory_gb), baselines=in_space)
    rng = np.random.default_rng(job.seed)
    points = np.column_stack([rng.integers(0, k, draws) for k in domain.levels])
    costs = domain.cost(points)
    trainable = np.isfinite(costs)
    within = float(domain.feasible(points, costs)[trainable].mean()) if trainable.any() else 0.0
    lengths = example_lengths(prepared)
    if Path(job.run_dir).exists() and job.layout.study_db.is_file():
        with StudyRecord.load(job) as record:
            check_resume(record, job, prepared)  # refused here as submit would refuse it
    return JobCheck(
        job=job.name, model=job.model, family=shape.family.name, model_type=shape.model_type, layers=shape.num_layers,
        hidden_size=shape.hidden_size, parameters=shape.base_params,
        task_type=data.kind, metric=job.task.metric, labels=list(data.label_names), train_examples=len(data.train_texts),
        validation_examples=data.num_validation, test_examples=len(data.test_texts),
        quality_floor=None if prepared.zero_shot_floor else prepared.reference.quality,
        floor=job.floor_kind, space=space.spec.name, dimensions=len(space.dimensions),
        points=math.prod(len(d.choices) for d in space.dimensions),
        smallest=_size(prepared, space.smallest_plan()), largest=_size(prepared, space.largest_plan()),
        max_trainable_params=prepared.max_params, max_memory_gb=job.budget.max_memory_gb, draws=int(trainable.sum()),
        within=within, baselines={name: _size(prepared, plan) for name, plan in prepared.baselines.items()},
        baselines_in_space=list(in_space),
        trials=job.budget.trials, parallel=job.budget.parallel, sampler=job.optimizer.sampler,
        schedule=job.fidelity.schedule, seed=job.seed, gpus_per_trial=job.resources.gpus,
        run_dir=str(job.run_dir), run_dir_exists=Path(job.run_dir).exists(),
        train_steps=train_steps(prepared), trial_examples=job.fidelity.examples(len(data.train_texts)),
        batch_size=job.fidelity.batch_size, base_dtype=job.fidelity.base_dtype, epochs=job.fidelity.epochs, lengths=lengths,
        cautions=cautions(prepared, lengths), final_seeds=job.final.seeds, final_fronts=job.final.fronts,
        final_steps=job.final_fidelity.steps(len(data.train_texts)),
        warm_start=None if job.optimizer.warm_start is None else os.path.normpath(job.optimizer.warm_start),
        warm_points=len(domain.not_baselines(prepared.warm_start)),
        startup_trials=min(job.optimizer.n_startup_trials, job.budget.trials),
    )


def train_steps(prepared: Prepared) -> int:
    """Optimizer steps of one whole trial of the job."""
    return prepared.job.fidelity.steps(len(prepared.data.train_texts))


def example_lengths(prepared: Prepared, sample: int = LENGTH_SAMPLE) -> Lengths:
    """Tokens of ``sample`` training examples drawn at random (all of them, where fewer), as the trials encode them."""
    from autopeft.workers.models import load_tokenizer
    from autopeft.workers.train import task_for

    data = prepared.data
    indices = sorted(np.random.default_rng(prepared.job.seed).permutation(len(data.train_texts))[:sample].tolist())
    lengths = np.asarray(task_for(data.kind).lengths(load_tokenizer(prepared.job.model), data, indices))
    return Lengths(len(lengths), int(np.median(lengths)), int(np.percentile(lengths, 95)),
                   float((lengths > prepared.job.fidelity.max_seq_length).mean()))


def cautions(prepared: Prepared, lengths: Lengths) -> list[str]:
    """What would keep the search from telling plans apart: too few steps for a classifier, most examples
    cut, one label so common that accuracy scores its every answer near the top."""
    said = [short_training(prepared)]
    if lengths.cut > 0.5:
        limit = prepared.job.fidelity.max_seq_length
        lost = "the start of their prompt" if prepared.data.kind == "generation" else f"all after their first {limit}"
        said.append(f"{lengths.cut:.0%} of the examples are longer than fidelity.max_seq_length ({limit} tokens; "
                    f"their median is {lengths.median:,}) and lose {lost}. Raise it ({_keeps(prepared, lengths)}) "
                    f"if the task needs more of them")
    said.append(_lopsided(prepared))
    said.append(_few_scored(prepared))
    said.append(_blocks_capped(prepared))
    said.append(_gpus_idle(prepared))
    return [text for text in said if text]


def _blocks_capped(prepared: Prepared) -> str | None:
    """A caution when a method asks for more blocks of layers (``layer_groups``) than the model has layers: it
    gets one block per layer."""
    layers = prepared.shape.num_layers
    asked = {name: getattr(entry, "layer_groups", 1) for name, entry in prepared.space.spec.modules if entry is not None}
    capped = [f"modules.{name}.layer_groups is {blocks}" for name, blocks in asked.items() if blocks > layers]
    if not capped:
        return None
    return (f"{' and '.join(capped)}, more than the {layers} layers of {prepared.job.model}: each layer is a block of "
            f"its own ({layers} blocks). Set it to {layers} or fewer to say what is searched")


def _gpus_idle(prepared: Prepared) -> str | None:
    """A caution when this machine (no cluster) has GPUs that the job's trials leave idle: none asked for
    (``resources.gpus: 0``), or fewer trials at a time than would use them all."""
    import torch

    job = prepared.job
    if cluster_address(job) or not torch.cuda.is_available():
        return None
    count, each, parallel = torch.cuda.device_count(), job.resources.gpus, job.budget.parallel
    if not each:
        return (f"this machine has {counted(count, 'GPU')} and resources.gpus is 0: every trial trains on the CPU, many "
                f"times slower. Set resources.gpus: 1 (a GPU per trial; 0.5 trains two trials on each)")
    fit = int(count / each + 1e-9)
    if parallel >= fit or job.budget.trials <= parallel:
        return None
    return (f"budget.parallel is {parallel}: {counted(parallel, 'trial')} at a time, each asking for {each:g} GPU, leave "
            f"{count - parallel * each:g} of this machine's {count} GPUs idle. Set budget.parallel: {fit} to use them all")


def _few_scored(prepared: Prepared) -> str | None:
    """A caution when each trial is scored on so few examples that its accuracy (or exact match), a share of
    them, is uncertain by more than ``COARSE``: more than close plans differ by. It names what to raise to score
    enough of them."""
    job, data = prepared.job, prepared.data
    scored = data.num_scored(job.fidelity)
    error = 0.5 / math.sqrt(scored)  # the standard error of a share of ``scored`` examples, at its largest
    if job.task.metric not in ("accuracy", "exact_match") or error <= COARSE:
        return None
    enough = math.ceil((0.5 / COARSE) ** 2)
    given, raised = [], []  # the validation file to give, the fields to raise
    if data.num_validation < enough and job.task.validation_file is not None:
        given.append(f"give a task.validation_file of {enough:,} examples or more")
    elif data.num_validation < enough:
        raised.append(f"task.validation_size (it holds out {data.num_validation:,} examples now)")
    if job.fidelity.eval_examples < enough:
        raised.append(f"fidelity.eval_examples ({job.fidelity.eval_examples:,} now)")
    fixes = given + ([f"raise {' and '.join(raised)}"] if raised else [])
    return (f"each trial is scored on {scored:,} validation examples: its {job.task.metric}, a share of them, is "
            f"uncertain by up to {100 * error:.1f} points (one standard error), more than close plans differ by, so the "
            f"front may rank them by chance. Score {enough:,} or more where the data and time allow: {' and '.join(fixes)}")


def _lopsided(prepared: Prepared) -> str | None:
    """A caution when one label is so common that accuracy barely tells plans apart."""
    job, data = prepared.job, prepared.data
    if data.kind != "classification" or job.task.metric != "accuracy" or job.objectives.quality_floor is not None \
            or prepared.reference.quality < LOPSIDED:
        return None
    labels = data.validation_labels[:data.num_scored(job.fidelity)]  # the examples the floor was scored on
    return (f"always answering the majority label scores {prepared.reference.quality:.2f} accuracy, so accuracy barely "
            f"tells plans apart. Macro F1 (task.metric: f1) scores that answer {majority_score('f1', labels):.2f}, "
            f"Matthews correlation (mcc) 0")


def _keeps(prepared: Prepared, lengths: Lengths) -> str:
    most = prepared.shape.max_tokens
    if most and most < lengths.p95:
        return f"to at most {most:,}, the longest input {prepared.job.model} takes"
    return f"{lengths.p95:,} keeps 95% of them whole"


def short_training(prepared: Prepared) -> str | None:
    """A caution when a classification trial trains fewer than ``SHORT_TRAINING`` steps, with the
    epochs that would reach them; None otherwise (a generation task's head is trained already)."""
    fidelity, steps = prepared.job.fidelity, train_steps(prepared)
    if prepared.data.kind != "classification" or steps >= SHORT_TRAINING:
        return None
    per_epoch = fidelity.steps_per_epoch(len(prepared.data.train_texts))
    return (f"{steps} steps are few: a new classification head learns little in fewer than {SHORT_TRAINING}, and most "
            f"plans would score the floor. Train longer (fidelity.epochs: {math.ceil(SHORT_TRAINING / per_epoch)} gives "
            f"{SHORT_TRAINING} or more) or in smaller batches (fidelity.batch_size)")


def _size(prepared: Prepared, plan) -> PlanSize:
    params = prepared.space.count(plan)
    return PlanSize(params, prepared.shape.pct(params), prepared.memory_gb(plan), plan.describe())


def format_check(check: JobCheck) -> str:
    def size(p: PlanSize) -> str:
        return f"{p.params:,} trainable ({p.pct:.4f}%), {p.memory_gb:.2f} GiB: {p.plan}"

    labels = ", ".join(check.labels[:6]) + (", ..." if len(check.labels) > 6 else "")
    floor = FLOORS[check.floor] if check.floor != "zero-shot" else None
    lines = [
        f"autopeft: job '{check.job}' is ready to run (nothing was trained, no run or store was written)",
        (f"model      {check.model}: {check.family} family ({check.model_type}), {check.layers} layers, "
         f"hidden size {check.hidden_size}, {check.parameters:,} parameters"),
        (f"task       {check.task_type}, {check.metric}: {check.train_examples:,} training and "
         f"{check.validation_examples:,} validation examples"
         + (f" ({check.test_examples:,} test examples, scored by the re-evaluation only)" if check.test_examples else "")
         + (f"; {len(check.labels)} labels ({labels})" if labels else "")),
        f"floor      {check.quality_floor:.4f} ({floor})" if floor else "floor      the base model's zero-shot score, measured first",
        f"space      {check.space}: {check.dimensions} dimensions, {check.points:.3g} points",
        f"smallest   {size(check.smallest)}",
        f"largest    {size(check.largest)}",
    ]
    limits = [f"{check.max_trainable_params:,} trainable parameters"] if check.max_trainable_params is not None else []
    limits += [f"{check.max_memory_gb:g} GiB"] if check.max_memory_gb is not None else []
    lines.append(f"budget     {' and '.join(limits)}: {check.within:.0%} of {check.draws:,} random plans are within it"
                 if limits else "budget     none: every plan may train")
    width = max((len(n) for n in check.baselines), default=0)
    learns = " (in the space: the search learns from it, and no trial trains it again)"
    lines += [f"baseline   {name:<{width}}  {size(p)}" + (learns if name in check.baselines_in_space and check.sampler == "autopeft" else "")
              for name, p in check.baselines.items()]
    device = ("GPU, bf16" if check.gpus_per_trial else "CPU") + (", the base's linear layers in bf16" if check.base_dtype == "bfloat16" else "")
    lines.append(f"training   {check.train_steps:,} optimizer steps a trial: {check.trial_examples:,} examples, "
                 f"batch {check.batch_size}, {check.epochs:g} epoch{'' if check.epochs == 1 else 's'}")
    lines.append(f"lengths    median {check.lengths.median:,} tokens, 95% within {check.lengths.p95:,} "
                 f"({check.lengths.examples:,} training examples); {check.lengths.cut:.0%} longer than "
                 f"fidelity.max_seq_length")
    lines += [f"caution    {text}" for text in check.cautions]
    lines.append(f"search     {check.trials} trials, {check.parallel} at a time, sampler {check.sampler}, "
                 f"schedule {check.schedule}, seed {check.seed}; memory estimated for {device}")
    if check.warm_start is not None and not check.startup_trials:
        lines.append(f"warm start none: budget.trials is 0, so no trial starts from the front of {check.warm_start}")
    elif check.warm_start is not None:
        lines.append(f"warm start {counted(check.warm_points, 'point')} of the front of {check.warm_start}, mapped onto this "
                     f"space, open{'s' if check.warm_points == 1 else ''} the initial design of {check.startup_trials} trials"
                     + (" (of a new search: submit resumes the one in the run dir)" if check.run_dir_exists else ""))
    lines.append(_final_line(check))
    lines.append(f"run dir    {check.run_dir}" + (" (exists: submit resumes its search)" if check.run_dir_exists else ""))
    return "\n".join(lines)


def _final_line(check: JobCheck) -> str:
    """What the re-evaluation after the search trains: how many seeds of what, and how long each."""
    if not check.final_seeds:
        return "final      no re-evaluation (final.seeds: 0): each point's score is that of its one training"
    fronts = "front" if check.final_fronts == 1 else f"first {check.final_fronts} fronts"
    count = len(check.baselines)
    baselines = "" if not count else " and the baseline" if count == 1 else f" and each of the {count} baselines"
    return (f"final      {check.final_seeds} new seeds of each point of the search's {fronts}{baselines}, "
            f"{check.final_steps:,} optimizer steps each")
