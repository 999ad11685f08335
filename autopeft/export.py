"""Export a Pareto point as a peft adapter folder that peft loads."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from autopeft.errors import UserError
from autopeft.job import JobSpec
from autopeft.pareto import Point, pick
from workers.models import model_shape, resolve_model
from workers.plan import lora_config
from workers.types import Plan


@dataclass(frozen=True)
class Exported:
    out: Path
    point: Point
    plan: Plan
    with_weights: bool


def export_point(job: JobSpec, how: str, out: str | Path) -> Exported:
    """Write ``adapter_config.json`` (and the trained weights) for the point ``how`` picks.

    ``how`` is ``best``, ``knee`` or ``smallest-above=<quality>``; also written:
    ``autopeft_point.json`` with the point's metrics, plan and origin (job, trial, MLflow run).
    """
    from autopeft.pareto import pareto_front
    from autopeft.search import finished_points, load_existing_study

    study = load_existing_study(job)
    front = pareto_front(finished_points(study))
    try:
        point = pick(front, how)
    except ValueError as exc:
        raise UserError("--pick", str(exc), "choose another point (see 'autopeft pareto')") from None
    trial = study.trials[point.trial]
    plan = Plan.from_dict(trial.user_attrs["plan"])
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UserError("--out", f"'{out}' exists and is not empty", "choose a new folder")
    shape = model_shape(job.model, int(study.user_attrs["num_labels"]))
    config = lora_config(plan, shape, base_model_name_or_path=resolve_model(job.model))
    out.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(out))
    weights = job.run_dir / "trials" / f"{point.trial:04d}" / "adapter" / "adapter_model.safetensors"
    if weights.is_file():
        shutil.copy(weights, out / weights.name)
    info = {
        "job": job.name,
        "model": job.model,
        "trial": point.trial,
        "pick": how,
        "metric": job.task.metric,
        "quality": point.quality,
        "metrics": trial.user_attrs.get("metrics", {}),
        "trainable_params": point.params,
        "trainable_pct": point.pct,
        "plan": plan.to_dict(),
        "plan_summary": plan.describe(),
        "mlflow_run_id": trial.user_attrs.get("mlflow_run_id"),
        "mlflow_tracking_uri": job.mlflow_uri,
        "mergeable": "LoRA merges into the base weights (PeftModel.merge_and_unload) for zero inference overhead",
    }
    (out / "autopeft_point.json").write_text(json.dumps(info, indent=2))
    return Exported(out=out, point=point, plan=plan, with_weights=weights.is_file())
