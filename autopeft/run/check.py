"""What a job would search, before it runs: ``autopeft check``.

Everything here reads the job, its model's shape (never its weights), its data and its space;
nothing is trained or started, and no run directory or store is written.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from autopeft.optimize.domain import MemoryLimit, space_domain
from autopeft.run.prepare import Prepared

DRAWS = 1000  # random points of the space drawn to tell how much of it the budget leaves


def summarise(prepared: Prepared, draws: int = DRAWS) -> dict:
    """The job as it would run: model, data, space and how much of it the budget allows, memory, baselines."""
    job, shape, space, data = prepared.job, prepared.shape, prepared.space, prepared.data
    smallest, largest = space.smallest_plan(), space.largest_plan()
    domain = space_domain(space, prepared.max_params, memory_gb=prepared.memory_gb,
                          memory_limit=MemoryLimit(job.budget.max_memory_gb))
    rng = np.random.default_rng(job.seed)
    points = np.column_stack([rng.integers(0, k, draws) for k in domain.levels]) if domain.levels else np.zeros((0, 0))
    costs = domain.cost(points)
    trainable = np.isfinite(costs)
    floor = "given" if job.objectives.quality_floor is not None else "zero-shot" if prepared.zero_shot_floor else "majority"
    return {
        "job": job.name,
        "model": {"name": job.model, "family": shape.family.name, "model_type": shape.model_type, "layers": shape.num_layers,
                  "hidden_size": shape.hidden_size, "parameters": shape.base_params},
        "task": {"type": data.kind, "metric": job.task.metric, "labels": list(data.label_names),
                 "train_examples": len(data.train_texts), "validation_examples": data.num_validation,
                 "quality_floor": None if prepared.zero_shot_floor else prepared.reference.quality, "floor": floor},
        "space": {"name": space.spec.name, "dimensions": len(space.dimensions),
                  "points": math.prod(len(d.choices) for d in space.dimensions),
                  "smallest": _plan(prepared, smallest), "largest": _plan(prepared, largest)},
        "budget": {"max_trainable_params": prepared.max_params, "max_memory_gb": job.budget.max_memory_gb,
                   "draws": int(trainable.sum()), "within": float(domain.feasible(points, costs)[trainable].mean())
                   if trainable.any() else 0.0},
        "baselines": {name: _plan(prepared, plan) for name, plan in prepared.baselines.items()},
        "search": {"trials": job.budget.trials, "parallel": job.budget.parallel, "sampler": job.optimizer.sampler,
                   "schedule": job.fidelity.schedule, "seed": job.seed, "gpus_per_trial": job.resources.gpus},
        "run_dir": {"path": str(job.run_dir), "exists": Path(job.run_dir).exists()},
    }


def _plan(prepared: Prepared, plan) -> dict:
    params = prepared.space.count(plan)
    return {"params": params, "pct": prepared.shape.pct(params), "memory_gb": prepared.memory_gb(plan),
            "plan": plan.describe()}


def format_summary(summary: dict) -> str:
    model, task, space, budget, search = (summary[k] for k in ("model", "task", "space", "budget", "search"))
    device = "GPU, bf16" if search["gpus_per_trial"] else "CPU"

    def plan_text(p: dict) -> str:
        return f"{p['params']:,} trainable ({p['pct']:.4f}%), {p['memory_gb']:.2f} GiB: {p['plan']}"

    labels = ", ".join(task["labels"][:6]) + (", ..." if len(task["labels"]) > 6 else "")
    floor = {"majority": "always the majority label", "given": "objectives.quality_floor"}.get(task["floor"])
    lines = [
        f"autopeft: job '{summary['job']}' is ready to run (nothing was trained, no run or store was written)",
        (f"model      {model['name']}: {model['family']} family ({model['model_type']}), {model['layers']} layers, "
         f"hidden size {model['hidden_size']}, {model['parameters']:,} parameters"),
        (f"task       {task['type']}, {task['metric']}: {task['train_examples']:,} training and "
         f"{task['validation_examples']:,} validation examples" + (f"; {len(task['labels'])} labels ({labels})" if labels else "")),
        f"floor      {task['quality_floor']:.4f} ({floor})" if floor else "floor      the base model's zero-shot score, measured first",
        f"space      {space['name']}: {space['dimensions']} dimensions, {space['points']:.3g} points",
        f"smallest   {plan_text(space['smallest'])}",
        f"largest    {plan_text(space['largest'])}",
    ]
    limits = [f"{budget['max_trainable_params']:,} trainable parameters"] if budget["max_trainable_params"] is not None else []
    limits += [f"{budget['max_memory_gb']:g} GiB"] if budget["max_memory_gb"] is not None else []
    lines.append(f"budget     {' and '.join(limits)}: {budget['within']:.0%} of {budget['draws']:,} random plans are within it"
                 if limits else "budget     none: every plan may train")
    width = max((len(n) for n in summary["baselines"]), default=0)
    lines += [f"baseline   {name:<{width}}  {plan_text(p)}" for name, p in summary["baselines"].items()]
    lines.append(f"search     {search['trials']} trials, {search['parallel']} at a time, sampler {search['sampler']}, "
                 f"schedule {search['schedule']}, seed {search['seed']}; memory estimated for {device}")
    run_dir = summary["run_dir"]
    lines.append(f"run dir    {run_dir['path']}" + (" (exists: submit resumes its search)" if run_dir["exists"] else ""))
    return "\n".join(lines)
