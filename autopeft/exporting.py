"""Export a Pareto point as a peft adapter folder that peft loads."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from autopeft.errors import UserError
from autopeft.job.secrets import mask_uri
from autopeft.job.spec import JobSpec
from autopeft.record.pareto import PICK_FORMS, PICKS, Point, pareto_front, pick
from autopeft.record.study import StudyRecord
from autopeft.workers.build import POINT_FILE, WEIGHTS_FILE, peft_configs
from autopeft.workers.methods import baseline_plan, method
from autopeft.workers.methods.peft_registry import OWN_TYPES
from autopeft.workers.models import model_shape, resolve_model
from autopeft.workers.plan import Plan


@dataclass(frozen=True)
class Exported:
    out: Path
    point: Point
    plan: Plan
    with_weights: bool
    load_with: str
    source: str  # what was exported: "trial 3", "baseline lora-r8"
    floor: float  # the search's quality floor: a point at or under it learned nothing
    seed: int | None = None  # the re-evaluation seed whose adapter was written; None: the search's own training
    adapter_quality: float | None = None  # that adapter's own validation score
    adapter_test: float | None = None  # and its score on the test examples, where there are some


def how_to_load(plan: Plan, peft_types: list[str]) -> str:
    """The call that loads an exported plan on a base model."""
    if plan.full or len(peft_types) != 1:
        return "autopeft.load_adapter(base_model, DIR)"
    if peft_types[0] in OWN_TYPES:
        return "peft.PeftModel.from_pretrained(base_model, DIR) after import autopeft"
    return "peft.PeftModel.from_pretrained(base_model, DIR)"


def export_point(job: JobSpec, how: str, out: str | Path) -> Exported:
    """Write ``adapter_config.json`` (and the trained weights) for the point ``how`` picks.

    ``how`` is ``best``, ``knee``, ``smallest-above=<quality>``, ``trial=<number>`` or
    ``baseline=<name>``; also written: ``autopeft_point.json`` with the point's metrics, plan and
    origin (job, trial or baseline, MLflow run), and a classifier's class names in the order of its outputs.
    """
    if not PICK_FORMS.fullmatch(how):
        raise UserError("--pick", f"'{how}' is not a pick", f"use {PICKS}")
    with StudyRecord.load(job) as record:
        return _export(job, record, how, out)


def _export(job: JobSpec, record: StudyRecord, how: str, out: str | Path) -> Exported:
    final, final_baselines = record.final_points()
    shape = model_shape(job.model, record.num_labels)
    if how.startswith("baseline="):
        name = how.split("=", 1)[1]
        point = final_baselines.get(name) or record.baseline_points().get(name)
        if point is None:
            ran = sorted(record.baseline_points())
            raise UserError("--pick", f"no baseline '{name}' has finished in this search",
                            f"use one of {', '.join(ran)}" if ran else "name baselines in the job file and resubmit it")
        plan, target, origin = baseline_plan(name, shape), f"baseline:{name}", record.baselines[name]
        trained = job.layout.baseline_adapter(name)
    else:
        finished = record.finished_points()
        pool = final or finished  # the re-evaluated front when there is one
        front = pareto_front(pool, record.reference.quality) or pareto_front(pool)  # all under the floor: its best, with a caution
        evaluated = {p.trial for p in final}
        try:
            point = pick(front, how, [*final, *(p for p in finished if p.trial not in evaluated)])
        except ValueError as exc:
            raise UserError("--pick", str(exc), "choose another point (see 'autopeft pareto')") from None
        plan, target, origin = record.plan_of(point.trial), f"trial:{point.trial}", record.trial_info(point.trial)
        trained = job.layout.trial_adapter(point.trial)
    source = target.replace(":", " ")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError("--out", f"'{out}' is a file", "give a new folder")
    if out.exists() and any(out.iterdir()):
        raise UserError("--out", f"'{out}' exists and is not empty", "choose a new folder")
    configs = [] if plan.full else peft_configs(plan, shape, base_model_name_or_path=resolve_model(job.model))
    seed, run_id, metrics = None, origin.get("mlflow_run_id"), origin.get("metrics", {})
    adapter_quality, adapter_test = point.quality, None
    if point.seeds:  # the re-trained adapter that scored best on validation: not one that collapsed
        seeds = record.final_seeds(target)
        seed = min(seeds, key=lambda s: (-seeds[s], s))
        trained = job.layout.final_adapter(target, seed)
        retrained = record.final[target][str(seed)]
        run_id, metrics, adapter_quality = retrained.get("mlflow_run_id"), retrained.get("metrics", {}), seeds[seed]
        adapter_test = retrained.get("test_quality")
    with tempfile.TemporaryDirectory(prefix="autopeft-export-") as staging:
        trained = _adapter_folder(job, trained, run_id, Path(staging))
        with_weights = (trained / WEIGHTS_FILE).is_file()
        if with_weights:
            out.mkdir(parents=True, exist_ok=True)
            for path in trained.iterdir():
                if path.is_file() and path.name != "README.md":
                    shutil.copy(path, out / path.name)
    if with_weights:
        config_file = out / "adapter_config.json"
        if config_file.is_file():  # as get_peft_model builds it: trainable (from_pretrained loads it frozen)
            config = json.loads(config_file.read_text())
            config["inference_mode"] = False
            config_file.write_text(json.dumps(config, indent=2, sort_keys=True))
    else:
        if len(configs) != 1:
            raise UserError("--pick", f"{source} saved no weights and needs {len(configs)} peft configs",
                            "export a point whose trial saved its adapter")
        out.mkdir(parents=True, exist_ok=True)
        configs[0].save_pretrained(str(out))
    load_with = how_to_load(plan, [str(c.peft_type.value) for c in configs])
    info = {
        "job": job.name,
        "model": job.model,
        "trial": point.trial if target.startswith("trial:") else None,
        "baseline": target.split(":", 1)[1] if target.startswith("baseline:") else None,
        "pick": how,
        "metric": job.task.metric,
        "labels": record.label_names or None,  # a classifier's classes, in the order of its outputs
        "quality": point.quality,
        "quality_std": point.std,
        "seeds": point.seeds,
        "adapter_seed": seed,
        "adapter_quality": adapter_quality,  # the exported adapter's own validation score
        "test_quality": point.test,  # with test examples (task.test_file or test_size): the seeds' mean on them
        "test_quality_std": point.test_std,
        "adapter_test_quality": adapter_test,  # the exported adapter's own score on the test examples
        "metrics": metrics,  # the exported adapter's own metrics
        "trainable_params": point.params,
        "trainable_pct": point.pct,
        "plan": plan.to_dict(),
        "plan_summary": plan.describe(),
        "mlflow_run_id": origin.get("mlflow_run_id"),  # the search's trial (or baseline) run
        "adapter_mlflow_run_id": run_id,  # the run that trained the exported adapter: a re-training's, where re-trained
        "mlflow_tracking_uri": mask_uri(job.mlflow_uri),
        "methods": list(plan.methods),
        "mergeable": {m: method(m).mergeable for m in plan.methods},
        "merge_note": _merge_note(plan),
        "load_with": load_with,
    }
    (out / POINT_FILE).write_text(json.dumps(info, indent=2))
    return Exported(out=out, point=point, plan=plan, with_weights=with_weights, load_with=load_with,
                    source=source, floor=record.reference.quality, seed=seed, adapter_quality=adapter_quality,
                    adapter_test=adapter_test)


def _adapter_folder(job: JobSpec, trained: Path, run_id: str | None, staging: Path) -> Path:
    """The trained adapter: in the run directory, else as its MLflow run keeps it (the search ran on another
    machine, and only the shared stores are here)."""
    if (trained / WEIGHTS_FILE).is_file() or run_id is None:
        return trained
    from autopeft.record.tracking import mlflow_client

    try:
        return Path(mlflow_client(job.mlflow_uri).download_artifacts(run_id, "adapter", str(staging)))
    except Exception:  # no such run or artifact: the config alone is exported, as for a trial that saved no weights
        return trained


def _merge_note(plan: Plan) -> str:
    merged = [m for m in plan.methods if method(m).mergeable]
    kept = [m for m in plan.methods if not method(m).mergeable]
    if not kept:
        return "every module merges into the base weights (merge_and_unload): no inference overhead"
    if not merged:
        return f"{', '.join(kept)} stay as extra modules at inference"
    return f"{', '.join(merged)} merge into the base weights; {', '.join(kept)} stay as extra modules at inference"
