"""Running a search: validate everything, then ask the study, dispatch to Ray, tell, track.

``prepare`` has no side effects: every user error surfaces there, before a run directory,
study or MLflow run exists. ``run_search`` then does the work.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import yaml

from autopeft.baselines import baseline_plans
from autopeft.data import load_task_data
from autopeft.errors import UserError
from autopeft.job import JobSpec
from autopeft.optimizer import make_sampler
from autopeft.pareto import Point, Reference, hypervolume, pareto_front
from autopeft.sampler import space_domain
from autopeft.space import SearchSpace, load_space
from workers.metrics import majority_score
from workers.models import ModelNotFound, ModelShape, model_shape, resolve_model
from workers.plan import trainable_pct
from workers.trial import load_trainer
from workers.types import Plan, TaskData, TrialRequest, TrialResult

log = logging.getLogger("autopeft")

DIRECTIONS = ["maximize", "minimize"]


@dataclass
class Prepared:
    """A job checked against its model, data and space, ready to run."""

    job: JobSpec
    shape: ModelShape
    space: SearchSpace
    data: TaskData
    reference: Reference
    max_params: int | None
    baselines: dict[str, Plan] = field(default_factory=dict)


@dataclass
class SearchSummary:
    run_dir: Path
    parent_run_id: str
    finished: int
    failed: int
    reference: Reference
    front: list[Point] = field(default_factory=list)
    hypervolume: float = 0.0
    baselines: dict[str, Point] = field(default_factory=dict)


def prepare(job: JobSpec) -> Prepared:
    """Check the job against its model, data, space and budget; raise ``UserError`` on any problem."""
    try:
        from transformers import AutoConfig

        AutoConfig.from_pretrained(resolve_model(job.model))
    except ModelNotFound as exc:
        raise UserError("model", str(exc), "use 'minilm-l6', a local model folder or a cached Hugging Face id") from None
    except OSError as exc:
        raise UserError("model", f"cannot load '{job.model}': {str(exc).splitlines()[0]}",
                        "use 'minilm-l6', a local model folder or a cached Hugging Face id") from None
    data = load_task_data(job.task)
    try:
        shape = model_shape(job.model, data.num_labels)
    except ModelNotFound as exc:
        raise UserError("model", str(exc), "choose a BERT-, RoBERTa- or DistilBERT-type encoder") from None
    space = load_space(job.search_space, shape)
    if job.trainer is not None:
        try:
            load_trainer(job.trainer)
        except (ImportError, AttributeError) as exc:
            raise UserError("trainer", f"cannot import '{job.trainer}': {exc}", "give an importable package.module:function") from None
    max_params = _budget_params(job, shape)
    largest = space.count(space.largest_plan())
    smallest = space.count(space.smallest_plan())
    if max_params is not None and smallest > max_params:
        raise UserError(
            "budget", f"the smallest plan of the space trains {smallest} parameters, over the budget of {max_params}",
            "raise max_trainable_pct / max_trainable_params or allow smaller ranks",
        )
    ceiling = largest if max_params is None else min(largest, max_params)
    if job.objectives.params_ceiling_pct is not None:
        ceiling = int(job.objectives.params_ceiling_pct / 100.0 * shape.base_params)
    n_eval = min(job.fidelity.eval_examples, len(data.validation_labels))
    floor = job.objectives.quality_floor
    if floor is None:
        floor = majority_score(job.task.metric, data.validation_labels[:n_eval])
    baselines = baseline_plans(job.baselines, shape)
    return Prepared(job, shape, space, data, Reference(quality=floor, params=ceiling + 1), max_params, baselines)


def _budget_params(job: JobSpec, shape: ModelShape) -> int | None:
    limits = []
    if job.budget.max_trainable_params is not None:
        limits.append(job.budget.max_trainable_params)
    if job.budget.max_trainable_pct is not None:
        limits.append(int(job.budget.max_trainable_pct / 100.0 * shape.base_params))
    return min(limits) if limits else None


def infeasible_reason(plan: Plan, params: int, max_params: int | None) -> str | None:
    if plan.is_empty:
        return "the plan turns every adapter off"
    if max_params is not None and params > max_params:
        return f"{params} trainable parameters exceed the budget of {max_params}"
    return None


def open_study(job: JobSpec, prepared: Prepared) -> optuna.Study:
    """Create or reopen the job's study (the source of truth for resume)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    domain = space_domain(prepared.space, prepared.max_params, prepared.reference)
    sampler = make_sampler(job.optimizer.sampler, job.seed, job.optimizer.n_startup_trials, domain)
    return optuna.create_study(
        study_name=job.name, storage=job.optuna_storage, directions=DIRECTIONS, sampler=sampler, load_if_exists=True
    )


def load_existing_study(job: JobSpec) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if job.stores.optuna_storage is None and not (job.run_dir / "study.db").is_file():
        raise UserError("run", f"no search has run for job '{job.name}' (no {job.run_dir / 'study.db'})", "run 'autopeft submit' first")
    try:
        return optuna.load_study(study_name=job.name, storage=job.optuna_storage)
    except KeyError:
        raise UserError("run", f"the study store has no search named '{job.name}'", "run 'autopeft submit' first") from None


def finished_points(study: optuna.Study) -> list[Point]:
    points = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if "skipped" in t.user_attrs:
            continue
        points.append(Point(trial=t.number, quality=t.values[0], params=int(t.values[1]),
                            pct=t.user_attrs.get("trainable_pct", 0.0), plan=t.user_attrs.get("plan_summary", "")))
    return points


def study_reference(study: optuna.Study) -> Reference:
    ref = study.user_attrs["reference"]
    return Reference(quality=ref["quality"], params=ref["params"])


def _init_ray(job: JobSpec):
    import ray

    if ray.is_initialized():
        return ray
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    kwargs = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    if job.stores.ray_address:
        import workers

        ray.init(address=job.stores.ray_address, runtime_env={"py_modules": [workers]}, **kwargs)
    else:
        ray.init(**kwargs)
    return ray


def _trainer_for_workers(ray, trainer: str | None):
    """The job's trial function, pickled by value unless it comes from an installed package.

    A user's module beside the job file then reaches every worker, local or on a cluster.
    """
    if trainer is None:
        return None
    import sys

    function = load_trainer(trainer)
    module = sys.modules[function.__module__]
    origin = Path(getattr(module, "__file__", "") or "")
    if not any(part in ("site-packages", "dist-packages") for part in origin.parts):
        ray.cloudpickle.register_pickle_by_value(module)
    return function


class _Pool:
    """Ray actors that run trials; one per trial slot, each keeping its model between trials."""

    def __init__(self, ray, job: JobSpec, data_ref):
        from workers.trial import TrialWorker

        self.ray = ray
        self.job = job
        self.data_ref = data_ref
        self.actor_cls = ray.remote(TrialWorker).options(
            num_cpus=job.resources.cpus, num_gpus=job.resources.gpus, max_concurrency=1
        )
        self.trainer = _trainer_for_workers(ray, job.trainer)
        self.idle = [self._new() for _ in range(job.budget.parallel)]

    def _new(self):
        return self.actor_cls.remote(self.data_ref, max(1, int(self.job.resources.cpus)), self.trainer)

    def submit(self, request: TrialRequest):
        actor = self.idle.pop()
        return actor, actor.run.remote(request)

    def release(self, actor, healthy: bool) -> None:
        self.idle.append(actor if healthy else self._new())


def run_search(job: JobSpec, progress: bool = True, prepared: Prepared | None = None) -> SearchSummary:
    """Run (or resume) the search the job describes and return its Pareto front."""
    prepared = prepared or prepare(job)
    from autopeft.tracking import Tracker
    from dashboards.pareto_plot import pareto_png

    run_dir = job.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    study = open_study(job, prepared)
    resuming = "reference" in study.user_attrs
    if resuming:
        reference = study_reference(study)
        _fail_interrupted(study)
    else:
        reference = prepared.reference
        study.set_user_attr("reference", {"quality": reference.quality, "params": reference.params})
        study.set_user_attr("job", job.model_dump(mode="json"))
        study.set_user_attr("num_labels", prepared.data.num_labels)
        study.set_user_attr("label_names", list(prepared.data.label_names))
    embedded = job.stores.mlflow_uri is None  # a tracking server keeps artifacts in its own store
    tracker = Tracker(job.mlflow_uri, job.name, artifact_root=run_dir / "mlartifacts" if embedded else None)
    parent_id = tracker.start_search(
        job.name,
        params={**_flatten(job.model_dump(mode="json")), "reference.quality": reference.quality,
                "reference.params": reference.params, "space.dimensions": len(prepared.space.dimensions),
                "model.base_params": prepared.shape.base_params},
        artifacts={"job.yaml": yaml.safe_dump(job.model_dump(mode="json"), sort_keys=False),
                   "search_space.yaml": yaml.safe_dump(prepared.space.spec.model_dump(mode="json"), sort_keys=False),
                   "reference.json": json.dumps({"quality": reference.quality, "params": reference.params})},
        resume_id=study.user_attrs.get("mlflow_parent_run_id"),
    )
    study.set_user_attr("mlflow_parent_run_id", parent_id)

    ray = _init_ray(job)
    pool = _Pool(ray, job, ray.put(prepared.data))
    states = optuna.trial.TrialState
    done = [t for t in study.get_trials(deepcopy=False) if t.state in (states.COMPLETE, states.FAIL)
            and not ({"skipped", "interrupted"} & set(t.user_attrs))]
    finished = len(done)
    failed = sum(1 for t in done if t.state == states.FAIL)
    baselines_done: dict = dict(study.user_attrs.get("baselines", {}))
    pending_baselines = [name for name in prepared.baselines if name not in baselines_done]
    bar = _progress(job.budget.trials + len(prepared.baselines), finished + len(baselines_done), progress)
    running: dict = {}
    skips = skips_in_a_row = 0
    status = "FAILED"

    def request_for(number: int, plan: Plan) -> TrialRequest:
        return TrialRequest(trial_number=number, plan=plan, model=job.model, num_labels=prepared.data.num_labels,
                            metric=job.task.metric, fidelity=job.fidelity, seed=job.seed, trainer=job.trainer)

    def searching() -> int:
        return sum(1 for entry in running.values() if entry[0] is not None)

    def update_front() -> None:
        points = finished_points(study)
        front = pareto_front(points)
        volume = hypervolume(points, reference)
        marks = baseline_points(baselines_done)
        png = pareto_png(points, front, reference, f"{job.name}: {len(points)} trials", job.task.metric, marks)
        tracker.log_front(front, volume, finished, png, {name: p.to_dict() for name, p in marks.items()})
        best = max([p.quality for p in points] or [float("nan")])
        bar.set_postfix(best=f"{best:.4f}", pareto=len(front), hv=f"{volume:.4f}")

    try:
        while pending_baselines or finished + searching() < job.budget.trials or running:
            while pool.idle and pending_baselines:
                name = pending_baselines.pop(0)
                plan = prepared.baselines[name]
                params = prepared.space.count(plan)
                run_id = tracker.start_trial(None, {"plan": plan.describe(), "trainable_params": params}, baseline=name)
                actor, ref = pool.submit(request_for(-1 - list(prepared.baselines).index(name), plan))
                running[ref] = (None, actor, run_id, params, trainable_pct(params, prepared.shape), name, plan)
            while pool.idle and finished + searching() < job.budget.trials:
                trial = _ask(study, prepared.space.distributions(), fallback=skips_in_a_row >= 5, seed=job.seed + skips)
                plan = prepared.space.decode(trial.params)
                params = prepared.space.count(plan)
                pct = trainable_pct(params, prepared.shape)
                trial.set_user_attr("plan", plan.to_dict())
                trial.set_user_attr("plan_summary", plan.describe())
                trial.set_user_attr("trainable_pct", pct)
                reason = infeasible_reason(plan, params, prepared.max_params)
                if reason is not None:
                    # Never trained, but told to the sampler at the quality floor, so that a model-based
                    # sampler learns the region is worthless instead of proposing it again and again.
                    trial.set_user_attr("skipped", reason)
                    study.tell(trial, [reference.quality, float(params)])
                    skips += 1
                    skips_in_a_row += 1
                    if skips > 50 * max(1, job.budget.trials):
                        raise RuntimeError(f"{skips} proposed plans were over the budget or empty; "
                                           "raise the budget or use a space with smaller sizes")
                    continue
                skips_in_a_row = 0
                run_id = tracker.start_trial(trial.number, {**prepared.space.values(trial.params),
                                                            "plan": plan.describe(), "trainable_params": params})
                trial.set_user_attr("mlflow_run_id", run_id)
                actor, ref = pool.submit(request_for(trial.number, plan))
                running[ref] = (trial, actor, run_id, params, pct, None, plan)
            ready, _ = ray.wait(list(running), num_returns=1)
            ref = ready[0]
            trial, actor, run_id, params, pct, baseline, plan = running.pop(ref)
            label = f"baseline {baseline}" if baseline else f"trial {trial.number}"
            try:
                result: TrialResult = ray.get(ref)
            except Exception as exc:  # the trial raised or its worker died: record it, go on
                pool.release(actor, healthy=not isinstance(exc, ray.exceptions.RayActorError))
                error = _error_text(exc)
                tracker.fail_trial(run_id, error)
                log.warning("%s failed: %s", label, error.strip().splitlines()[-1])
                if baseline:
                    baselines_done[baseline] = {"error": error[-2000:], "plan": plan.describe(), "mlflow_run_id": run_id}
                    study.set_user_attr("baselines", baselines_done)
                else:
                    trial.set_user_attr("error", error[-2000:])
                    study.tell(trial, state=states.FAIL)
                    failed += 1
                    finished += 1
                bar.update(1)
                continue
            pool.release(actor, healthy=True)
            adapter_dir = _save_adapter(run_dir, f"baselines/{baseline}" if baseline else f"trials/{trial.number:04d}", result)
            tracker.finish_trial(run_id, {**result.metrics, "quality": result.quality, "trainable_params": params,
                                          "trainable_pct": pct, "train_seconds": result.train_seconds,
                                          "peak_memory_mb": result.peak_memory_mb}, adapter_dir)
            if baseline:
                baselines_done[baseline] = {"quality": result.quality, "params": params, "pct": pct,
                                            "plan": plan.describe(), "metrics": result.metrics, "mlflow_run_id": run_id}
                study.set_user_attr("baselines", baselines_done)
            else:
                for key, value in (("metrics", result.metrics), ("train_seconds", result.train_seconds),
                                   ("peak_memory_mb", result.peak_memory_mb), ("device", result.device)):
                    trial.set_user_attr(key, value)
                study.tell(trial, [result.quality, float(params)])
                finished += 1
            update_front()
            bar.update(1)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        bar.close()
        for trial, _, run_id, *_ in running.values():
            if trial is not None:
                trial.set_user_attr("interrupted", True)
                trial.set_user_attr("error", "interrupted: the search stopped before this trial finished")
                study.tell(trial, state=states.FAIL)
            tracker.fail_trial(run_id, "the search stopped before this trial finished")
        tracker.finish_search(status)
    points = finished_points(study)
    return SearchSummary(run_dir=run_dir, parent_run_id=parent_id, finished=finished, failed=failed,
                         reference=reference, front=pareto_front(points), hypervolume=hypervolume(points, reference),
                         baselines=baseline_points(baselines_done))


def _ask(study: optuna.Study, distributions: dict, fallback: bool, seed: int) -> optuna.trial.Trial:
    """The sampler's next point; a random one when the sampler keeps proposing plans that cannot be trained."""
    if not fallback:
        return study.ask(distributions)
    sampler = study.sampler
    study.sampler = optuna.samplers.RandomSampler(seed=seed)
    try:
        return study.ask(distributions)
    finally:
        study.sampler = sampler


def baseline_points(records: dict) -> dict[str, Point]:
    """Finished baselines as points (failed ones left out), keyed by name."""
    return {name: Point(trial=-1, quality=r["quality"], params=int(r["params"]), pct=r["pct"], plan=r["plan"])
            for name, r in records.items() if "quality" in r}


def _fail_interrupted(study: optuna.Study) -> None:
    """Trials left RUNNING by a search that was killed are marked failed; they do not use up the budget."""
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        orphan = optuna.trial.Trial(study, t._trial_id)
        orphan.set_user_attr("interrupted", True)
        orphan.set_user_attr("error", "interrupted: the search stopped before it finished")
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)


def _save_adapter(run_dir: Path, where: str, result: TrialResult) -> Path | None:
    if not result.adapter_files:
        return None
    target = run_dir / where / "adapter"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name, content in result.adapter_files.items():
        (target / name).write_bytes(content)
    return target


def _error_text(exc: Exception) -> str:
    cause = getattr(exc, "cause", None)
    if cause is not None:
        return "".join(traceback.format_exception(cause))
    return "".join(traceback.format_exception(exc))


def _flatten(data: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


class _NoBar:
    def update(self, n: int = 1) -> None: ...
    def set_postfix(self, **kwargs) -> None: ...
    def close(self) -> None: ...


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="trials", unit="trial", dynamic_ncols=True)
