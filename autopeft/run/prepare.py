"""Checking a job against its model, data, space and budget, before anything is written.

``prepare`` has no side effects: every error a user can cause surfaces here, before a run
directory, a study or an MLflow run exists.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from autopeft.errors import UserError, model_at
from autopeft.job.data import load_task_data
from autopeft.job.secrets import mask_uri, split_credentials
from autopeft.job.spec import JobSpec
from autopeft.record.pareto import Reference, counted
from autopeft.record.study import StudyRecord
from autopeft.record.tracking import flatten
from autopeft.run.pool import cluster_address, cluster_field
from autopeft.space.search_space import SearchSpace, load_space
from autopeft.workers.families import FAMILIES
from autopeft.workers.memory import MemoryEstimate, estimate_memory
from autopeft.workers.methods import POOLED, baseline_plan, every_baseline, method, split_pooled
from autopeft.workers.metrics import majority_score
from autopeft.workers.models import ModelNotFound, ModelShape, load_tokenizer, model_shape, no_pooler, pretrained
from autopeft.workers.plan import Plan
from autopeft.workers.trial import load_trainer
from autopeft.workers.types import TaskData

MODEL_FIX = "use a built-in model (minilm-l6, smollm2-135m), a local model folder or .gguf file, or a cached Hugging Face id"


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
    zero_shot_floor: bool = False  # the reference's quality is the base model's zero-shot score, measured at start
    warm_start: list[dict[str, int]] = field(default_factory=list)  # points that open a new search's initial design

    def memory(self, plan: Plan) -> MemoryEstimate:
        """The estimated peak training memory of ``plan`` under the job's fidelity and devices."""
        return estimate_memory(plan, self.shape, self.job.fidelity, self.space.count(plan), gpu=self.job.resources.gpus > 0)

    def memory_gb(self, plan: Plan) -> float:
        return self.memory(plan).total_gb

    def baseline_points(self) -> dict[str, dict[str, int]]:
        """The named baselines that are points of the search space, as those points: the sampler learns from them
        and never proposes their plans."""
        rate = self.job.fidelity.learning_rate
        return {name: point for name, plan in self.baselines.items() if (point := self.space.point_of(plan, rate)) is not None}


def prepare(job: JobSpec) -> Prepared:
    """Check the job against its model, data, space and budget; raise ``UserError`` on any problem."""
    try:
        from transformers import AutoConfig

        path, extra = pretrained(job.model)
        AutoConfig.from_pretrained(path, **extra)
    except ModelNotFound as exc:
        raise UserError("model", str(exc), MODEL_FIX) from None
    except (OSError, ValueError) as exc:
        raise UserError("model", f"cannot load '{job.model}': {str(exc).strip().splitlines()[0]}", MODEL_FIX) from None
    _check_run_dir(job)
    _check_stores(job)
    _check_cluster(job)
    _check_resources(job)
    data = load_task_data(job.task)
    try:
        shape = model_shape(job.model, data.num_labels)
    except ModelNotFound as exc:
        raise UserError("model", str(exc), f"choose a model of one of these types: {', '.join(sorted(FAMILIES))}") from None
    tokenizer = load_tokenizer(job.model)
    _check_tokenizer(job, data, shape, tokenizer)
    if data.chat:
        _check_chat_template(job, data, tokenizer)
    space = load_space(job.search_space, shape, job.fidelity.learning_rate)
    if job.trainer is not None:
        try:
            load_trainer(job.trainer)
        except Exception as exc:  # a module that fails as it is imported, whatever it raises
            problem = f"{type(exc).__name__}: {exc}".splitlines()[0]
            raise UserError("trainer", f"cannot import '{job.trainer}': {problem}", "give an importable package.module:function") from None
    max_params = budget_params(job, shape)
    largest = space.count(space.largest_plan())
    smallest = space.count(space.smallest_plan())
    if max_params is not None and smallest > max_params:
        raise UserError(
            "budget", f"the smallest plan of the space trains {smallest} parameters, over the budget of {max_params}",
            "raise max_trainable_pct / max_trainable_params or allow smaller ranks",
        )
    _check_memory(job, shape, space)
    ceiling = largest if max_params is None else min(largest, max_params)
    if job.objectives.params_ceiling_pct is not None:
        ceiling = int(job.objectives.params_ceiling_pct / 100.0 * shape.base_params)
    n_eval = data.num_scored(job.fidelity)
    floor = job.objectives.quality_floor
    zero_shot = job.floor_kind == "zero-shot"
    if floor is None:
        floor = 0.0 if zero_shot else majority_score(job.task.metric, data.validation_labels[:n_eval])
    baselines = baseline_plans(job.baselines, shape)
    _check_input_length(job, shape, [space.largest_plan(), *baselines.values()])
    warm = []
    opened = min(job.optimizer.n_startup_trials, job.budget.trials)  # the initial design the search trains
    if job.optimizer.warm_start is not None and opened:
        from autopeft.optimize.warm_start import warm_points

        mapped = warm_points(job.optimizer.warm_start, [(d.name, d.choices) for d in space.dimensions], opened)
        plans = [space.decode(p) for p in mapped]
        warm = [p for p, plan in zip(mapped, plans, strict=True)
                if not plan.is_empty and (max_params is None or space.count(plan) <= max_params)]
        if not warm:
            empty = sum(p.is_empty for p in plans)
            why = [f"{empty} adapt nothing: their modules are not in this space"] if empty else []
            why += [f"{len(plans) - empty} are over the budget"] if len(plans) > empty else []
            raise UserError("optimizer.warm_start", f"no plan of the front of '{job.optimizer.warm_start}' "
                            f"({counted(len(plans), 'plan')}), mapped onto this space, trains something within the budget "
                            f"({'; '.join(why)})",
                            "start from a search over a space with the same modules, or leave optimizer.warm_start out")
    return Prepared(job, shape, space, data, Reference(quality=floor, params=ceiling + 1), max_params, baselines, zero_shot,
                    warm)


# what a trial's result means; not the trainer, whose code may change under the same name anyway
RESUMED_AS_STARTED = ("model", "task", "search_space", "objectives", "budget.max_trainable_pct",
                      "budget.max_trainable_params", "fidelity")
MOVABLE = ("task.train_file", "task.validation_file")  # a data file may move; its labels are compared instead
# scored by the re-evaluation only, it may change until a re-evaluation has scored it (task.test_size may not: it
# changes which examples the search trains on)
UNTIL_FINAL = ("task.test_file",)
RUNGS_ONLY = ("fidelity.rungs", "fidelity.reduction_factor", "fidelity.brackets")  # mean nothing with schedule: full


def check_resume(record: StudyRecord, job: JobSpec, prepared: Prepared) -> None:
    """A job submitted again resumes its search only if it describes the same search: the same model,
    data, space, objectives, budget and training (``RESUMED_AS_STARTED``), and the same re-training
    once re-evaluations exist. The trial count, parallelism, sampler, baselines, trainer and stores may change,
    and so may the settings of rungs (``RUNGS_ONLY``) while the search trains every trial in full."""
    if not record.started:
        return
    fix = f"put it back to resume the search '{job.name}', or give the job a new name to start another search"
    fixed = RESUMED_AS_STARTED + (("final.epochs",) if record.final else ())
    free = MOVABLE + (() if record.final else UNTIL_FINAL)
    before, now = flatten(record.job), flatten(job.public_dict())
    in_full = "asha" not in (before.get("fidelity.schedule"), now.get("fidelity.schedule"))
    for key in sorted(before.keys() & now.keys()):
        if in_full and key in RUNGS_ONLY:
            continue
        if before[key] != now[key] and _under(key, fixed) and not _under(key, free):
            raise UserError(key, f"the search '{job.name}' was started with {key}: {before[key]!r}, and this job "
                                 f"file has {now[key]!r}", fix)
    for key in sorted(now.keys() - before.keys()):  # a setting newer than the search: the search ran with its default
        if (_under(key, fixed) and not _under(key, free) and not (in_full and key in RUNGS_ONLY)
                and now[key] != (default := _default(key))):
            raise UserError(key, f"the search '{job.name}' was started before autopeft had {key}, as its default "
                                 f"{default!r}, and this job file has {now[key]!r}", fix)
    labels = record.label_names
    if labels is not None and labels != list(prepared.data.label_names):
        raise UserError("task", f"the search '{job.name}' was started on data labelled {labels}, "
                                 f"and this job's data is labelled {list(prepared.data.label_names)}", fix)
    started, space = record.space, prepared.space.summary()
    if started is not None and started != space:
        changed = sorted(k for k in started["dimensions"].keys() | space["dimensions"].keys()
                         if started["dimensions"].get(k) != space["dimensions"].get(k))
        what = f"dimension {changed[0]}" if changed else "its fixed settings"
        raise UserError("search_space", f"the space '{job.search_space}' has changed since the search '{job.name}' "
                                        f"started ({what} differs)", fix)


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def _default(key: str) -> object:
    """The default of a job file's setting, by its flat key (``fidelity.base_dtype``), as the job stores it."""
    from pydantic_core import to_jsonable_python

    *path, name = key.split(".")
    return to_jsonable_python(model_at(JobSpec, path).model_fields[name].get_default(call_default_factory=True))


def _check_run_dir(job: JobSpec) -> None:
    for path in (job.run_dir, *job.run_dir.parents):
        if path.exists():
            if not path.is_dir():
                raise UserError("stores.run_dir", f"'{path}' is a file, not a folder", "choose another run_dir")
            return


DRIVERS = {"postgresql": "'psycopg[binary]'", "mysql": "pymysql"}  # the package each database's default driver is in


def _check_stores(job: JobSpec) -> None:
    """Store URIs that can be opened: a known scheme and its database driver installed."""
    storage = job.stores.optuna_storage
    if storage is not None:
        from sqlalchemy.engine import make_url

        try:
            make_url(storage).get_dialect()
        except ImportError as exc:
            backend = storage.split(":", 1)[0].split("+", 1)[0]
            package = DRIVERS.get(backend, exc.name or "its database driver")
            raise UserError("stores.optuna_storage", f"the {backend} driver is not installed ({exc.name})",
                            f"pip install {package}" + (" (or autopeft[postgres])" if backend == "postgresql" else "")) from None
        except Exception as exc:
            raise UserError("stores.optuna_storage", f"'{mask_uri(storage)}' is not a database URL: {exc}",
                            "use a SQLAlchemy URL, e.g. postgresql://user:${DB_PASSWORD}@host/db, or leave it out") from None
        _check_study_database(storage)
    uri = job.stores.mlflow_uri
    if uri is not None and not uri.startswith(("http://", "https://", "sqlite:///", "postgresql", "mysql", "file:", "databricks")):
        raise UserError("stores.mlflow_uri", f"'{mask_uri(uri)}' is not an MLflow tracking URI",
                        "use http(s)://host:port of an MLflow server, a database URL, or leave it out")
    if uri is not None and uri.startswith(("http://", "https://")):
        _check_mlflow_server(uri)


def _check_study_database(url: str) -> None:
    """A database server that lets this machine in (an SQLite file is made where it is missing)."""
    import sqlalchemy
    import sqlalchemy.exc

    if url.startswith("sqlite"):
        return
    connect_args = {"connect_timeout": int(STORE_CHECK_TIMEOUT)} if url.startswith("postgresql") else {}
    engine = sqlalchemy.create_engine(url, connect_args=connect_args)
    try:
        with engine.connect():
            pass
    except sqlalchemy.exc.SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise UserError("stores.optuna_storage", f"cannot connect to the study database {mask_uri(url)}: {reason}",
                        "start the database server, or correct the URL, user and password; leave stores.optuna_storage "
                        "out to keep the study in the run directory") from None
    finally:
        engine.dispose()


def _check_mlflow_server(uri: str) -> None:
    """An MLflow server that answers. Once a search runs it outlives the server's outages, but a server
    that never answered (a wrong host or port, a server not started) is the user's to fix, now."""
    import requests

    base, _, _ = split_credentials(uri)
    try:
        requests.get(base.rstrip("/") + "/health", timeout=STORE_CHECK_TIMEOUT)
    except requests.exceptions.SSLError:
        return  # a certificate MLflow's own settings (MLFLOW_TRACKING_INSECURE_TLS, ..._SERVER_CERT_PATH) may accept
    except requests.exceptions.RequestException as exc:
        reason = (f"no answer within {STORE_CHECK_TIMEOUT:.0f} s" if isinstance(exc, requests.exceptions.Timeout)
                  else "cannot connect" if isinstance(exc, requests.exceptions.ConnectionError) else type(exc).__name__)
        raise UserError("stores.mlflow_uri", f"the MLflow server at {mask_uri(uri)} does not answer ({reason})",
                        "start the server (mlflow server --host 0.0.0.0 --port 5000) or correct the address; "
                        "leave stores.mlflow_uri out to record into the run directory") from None


STORE_CHECK_TIMEOUT = 10.0  # seconds a store has to answer the first call of a search


def _check_cluster(job: JobSpec) -> None:
    """A Ray cluster address where something listens: Ray itself would wait for a dead one forever."""
    import socket
    from urllib.parse import urlsplit

    address = cluster_address(job)
    if not address or address in ("auto", "local"):
        return
    field = cluster_field(job)
    if "://" in address and not address.startswith("ray://"):
        return  # another client scheme: Ray's to check
    try:
        parts = urlsplit(address if "://" in address else f"gcs://{address}")
        host, port = parts.hostname, parts.port or (10001 if parts.scheme == "ray" else 6379)
    except ValueError:
        host = None
    if not host:
        raise UserError(field, f"'{mask_uri(address)}' is not a Ray cluster address", "use ray://HOST:10001 or HOST:6379")
    try:
        with socket.create_connection((host, port), timeout=STORE_CHECK_TIMEOUT):
            pass
    except OSError as exc:
        reason = f"no answer within {STORE_CHECK_TIMEOUT:.0f} s" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
        raise UserError(field, f"no Ray cluster answers at {mask_uri(address)} ({reason})",
                        "start the cluster's head (ray start --head) or correct the address; leave it out to run on "
                        "this machine") from None


def _local_cpus() -> int:
    """The CPUs the local Ray will offer: its own count (container limits included) where it can tell."""
    try:
        from ray._private.utils import get_num_cpus

        return int(get_num_cpus())
    except Exception:  # a Ray without that helper: the machine's count
        import os

        return os.cpu_count() or 1


def _local_fits(job: JobSpec) -> list[tuple[str, str, float, int, int]]:
    """Per resource of this machine: (kind, setting, what a trial asks, what the machine has, how many
    trial workers fit at once: ``budget.parallel`` where a trial asks none)."""
    import torch

    parallel = job.budget.parallel
    rows = []
    for kind, setting, each, have in (("CPUs", "resources.cpus", job.resources.cpus, _local_cpus()),
                                      ("GPUs", "resources.gpus", job.resources.gpus, torch.cuda.device_count())):
        rows.append((kind, setting, each, have, int(have / each + 1e-9) if each > 0 else parallel))
    return rows


def parallel_that_fits(job: JobSpec) -> int:
    """``budget.parallel``, or fewer where this machine cannot hold that many trial workers at once (no cluster)."""
    if cluster_address(job):
        return job.budget.parallel
    return max(1, min(job.budget.parallel, *(fit for *_, fit in _local_fits(job))))


def _check_resources(job: JobSpec) -> None:
    """On this machine (no Ray cluster), a trial's CPUs and GPUs must exist, and the ``budget.parallel`` trial
    workers must fit at once: Ray would wait forever for a worker that cannot start, and its trial with it."""
    if cluster_address(job):
        return
    parallel = job.budget.parallel
    rows = _local_fits(job)
    for kind, setting, each, have, _ in rows:
        if each > have:
            raise UserError(setting, f"a trial asks for {each:g} {kind}; this machine has {have}",
                            f"use at most {have}, or run on a Ray cluster (stores.ray_address)")
    for kind, setting, each, have, fit in rows:
        if fit < parallel:
            raise UserError("budget.parallel", f"{parallel} trials at a time need {parallel * each:g} {kind} "
                            f"({setting} {each:g} each); this machine has {have}",
                            f"use budget.parallel {fit} or less, a smaller {setting} (trials then share them), "
                            "or run on a Ray cluster (stores.ray_address)")


def _check_memory(job: JobSpec, shape: ModelShape, space: SearchSpace) -> None:
    limit = job.budget.max_memory_gb
    if limit is None:
        return
    smallest = space.smallest_plan(top=True)
    need = estimate_memory(smallest, shape, job.fidelity, space.count(smallest), gpu=job.resources.gpus > 0).total_gb
    if need > limit:
        raise UserError(
            "budget.max_memory_gb", f"the smallest plan of the space needs an estimated {need:.2f} GiB to train, "
            f"over the budget of {limit:g} GiB",
            "raise max_memory_gb, lower fidelity.batch_size or fidelity.max_seq_length, "
            "or set fidelity.gradient_checkpointing: true",
        )


def _check_input_length(job: JobSpec, shape: ModelShape, plans: list[Plan]) -> None:
    """Refuse inputs longer than the model's position embeddings hold, prompt tuning's virtual tokens included."""
    if not shape.max_tokens:
        return
    virtual = max(plan["prompt"].tokens if "prompt" in plan.methods else 0 for plan in plans)
    if job.fidelity.max_seq_length + virtual > shape.max_tokens:
        prompt = f" and prompt tuning's {virtual} virtual tokens" if virtual else ""
        raise UserError("fidelity.max_seq_length", f"{job.fidelity.max_seq_length} tokens{prompt} are more than "
                        f"{job.model} takes: its position embeddings hold {shape.max_tokens}",
                        f"use {shape.max_tokens - virtual} or fewer")


def _check_tokenizer(job: JobSpec, data: TaskData, shape: ModelShape, tokenizer) -> None:
    """The tokenizer pads batches (with its padding token, else its end-of-sequence token); a generation task takes a
    decoder whose tokenizer has an end-of-sequence token to end each completion with."""
    if data.kind == "generation" and not shape.family.decoder:
        raise UserError("model", f"'{job.model}' is an encoder ({shape.model_type}): its attention sees the whole text "
                        "at once, and it does not generate", "search it on a classification task (task.type: "
                        "classification), or give a generation task a decoder (a built-in: smollm2-135m)")
    if data.kind == "generation" and tokenizer.eos_token_id is None:
        raise UserError("model", f"the tokenizer of '{job.model}' has no end-of-sequence token to end each "
                        "completion with", "give the model's tokenizer its eos_token (tokenizer_config.json)")
    if tokenizer.pad_token_id is None:
        raise UserError("model", f"the tokenizer of '{job.model}' has neither a padding token nor an end-of-sequence "
                        "token to pad batches with", "give the model's tokenizer its pad_token or eos_token "
                        "(tokenizer_config.json)")


def _check_chat_template(job: JobSpec, data: TaskData, tokenizer) -> None:
    """The model's chat template renders a conversation of each sequence of roles in the data (many templates refuse
    a system message, or roles that do not alternate between user and assistant)."""
    if not getattr(tokenizer, "chat_template", None):
        raise UserError("task.messages_column", f"'{job.model}' has no chat template to render the chat messages",
                        "give prompt and completion columns instead, or use a model with a chat template")
    conversations = {}
    for prompt, _ in data.train_texts + data.validation_texts + data.test_texts:
        messages = json.loads(prompt)
        conversations.setdefault(tuple(m.get("role") for m in messages), messages)
    for roles, messages in conversations.items():
        try:
            tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except Exception as exc:  # the template's own refusal (raise_exception), or whatever rendering raises
            raise UserError("task.messages_column", f"the chat template of '{job.model}' refuses a conversation of "
                            f"{', '.join(map(str, roles))} messages before the answer: {str(exc).splitlines()[0]}",
                            "give the messages in the roles the template takes (many take no system message: put it "
                            "at the start of the first user message; many take user and assistant in turn)") from None


def budget_params(job: JobSpec, shape: ModelShape) -> int | None:
    """The hard budget in trainable parameters, from ``max_trainable_params`` and ``max_trainable_pct``."""
    limits = []
    if job.budget.max_trainable_params is not None:
        limits.append(job.budget.max_trainable_params)
    if job.budget.max_trainable_pct is not None:
        limits.append(int(job.budget.max_trainable_pct / 100.0 * shape.base_params))
    return min(limits) if limits else None


def baseline_plans(names: list[str], shape: ModelShape) -> dict[str, Plan]:
    """The plans of the named baselines for this model, in the order given."""
    owners = every_baseline()
    plans = {n: baseline_plan(n, shape) for n in owners}
    fitting = [n for n, plan in plans.items() if all(method(m).fits(shape.family, plan[m]) for m in plan.methods)]
    for name in names:
        base, pooler = split_pooled(name)
        if base not in owners:
            raise UserError("baselines", f"unknown baseline '{name}'",
                            f"use some of {', '.join(owners)} (any of them{POOLED} to train a BERT's pooler too, or "
                            f"{POOLED}-r8 for a LoRA of rank 8 on it)")
        if base not in fitting:
            raise UserError("baselines", f"'{base}' does not fit {shape.family.name} models ('{shape.model_type}')",
                            f"use {', '.join(fitting)} with this model")
        if pooler and (not shape.pooler_params or plans[base].full):
            why = "full fine-tuning trains the pooler already" if plans[base].full else no_pooler(shape)
            raise UserError("baselines", f"'{name}': {why}", f"use '{base}'")
        if pooler.get("pooler_rank") and shape.pooler_fresh:
            raise UserError("baselines", f"'{name}': the checkpoint holds no pooler weights, so its pooler starts at "
                            f"random and every baseline trains it whole", f"use '{base}'")
        if pooler.get("pooler_rank", 0) > shape.pooler_rank_limit:
            raise UserError("baselines", f"'{name}': LoRA rank {pooler['pooler_rank']} is larger than the pooler's "
                            f"width {shape.pooler_rank_limit}", f"use a rank of at most {shape.pooler_rank_limit}")
    return {name: baseline_plan(name, shape) for name in names}
