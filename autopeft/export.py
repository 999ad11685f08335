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
from workers.plan import MERGEABLE, WEIGHTS_FILE, peft_configs
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
    trained = job.run_dir / "trials" / f"{point.trial:04d}" / "adapter"
    with_weights = (trained / WEIGHTS_FILE).is_file()
    if with_weights:
        out.mkdir(parents=True, exist_ok=True)
        for path in trained.iterdir():
            if path.is_file() and path.name != "README.md":
                shutil.copy(path, out / path.name)
        config_file = out / "adapter_config.json"
        if config_file.is_file():  # as get_peft_model builds it: trainable (from_pretrained loads it frozen)
            config = json.loads(config_file.read_text())
            config["inference_mode"] = False
            config_file.write_text(json.dumps(config, indent=2, sort_keys=True))
    else:
        configs = peft_configs(plan, shape, base_model_name_or_path=resolve_model(job.model))
        if len(configs) != 1:
            raise UserError("--pick", f"trial {point.trial} saved no weights and combines {len(configs)} methods",
                            "export a point whose trial saved its adapter")
        out.mkdir(parents=True, exist_ok=True)
        configs[0].save_pretrained(str(out))
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
        "methods": list(plan.methods),
        "mergeable": {m: MERGEABLE[m] for m in plan.methods},
        "merge_note": _merge_note(plan),
        "load_with": "peft.PeftModel.from_pretrained(base, DIR)" if len(plan.methods) == 1 and not plan.full
                     else "workers.plan.load_adapter(base, DIR) (after import autopeft)",
    }
    (out / "autopeft_point.json").write_text(json.dumps(info, indent=2))
    return Exported(out=out, point=point, plan=plan, with_weights=with_weights)


def _merge_note(plan: Plan) -> str:
    merged = [m for m in plan.methods if MERGEABLE[m]]
    kept = [m for m in plan.methods if not MERGEABLE[m]]
    if not kept:
        return "every module merges into the base weights (merge_and_unload): no inference overhead"
    if not merged:
        return f"{', '.join(kept)} stay as extra modules at inference"
    return f"{', '.join(merged)} merge into the base weights; {', '.join(kept)} stay as extra modules at inference"
