"""Shared fixtures: tiny real models built from configs, real data subsets, one local Ray."""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
if "AUTOPEFT_CACHE" not in os.environ:  # models dequantised once for the whole run, in every process it starts
    os.environ["AUTOPEFT_CACHE"] = tempfile.mkdtemp(prefix="autopeft-cache-")
    atexit.register(shutil.rmtree, os.environ["AUTOPEFT_CACHE"], True)


def tiny_model(tmp_path_factory, name: str, config, masked_lm: bool = False) -> str:
    """A randomly initialised sequence classifier built from ``config``, saved with MiniLM's tokenizer;
    with ``masked_lm`` a masked language model, as pre-training leaves it (no pooler, no classifier)."""
    import torch
    from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoTokenizer

    from autopeft.workers.models import resolve_model

    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp(name)
    (AutoModelForMaskedLM if masked_lm else AutoModelForSequenceClassification).from_config(config).save_pretrained(directory)
    AutoTokenizer.from_pretrained(resolve_model("minilm-l6")).save_pretrained(directory)
    return str(directory)


CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }} {% endfor %}"
                 "{% if add_generation_prompt %}assistant: {% endif %}")


def tiny_decoder(tmp_path_factory, name: str, reviews_csv: Path, config_cls, classifier: bool = False,
                 chat_template: str | None = None) -> str:
    """A 2-layer decoder (Llama-style ``config_cls``) with a word-level tokenizer over the reviews' words:
    an end-of-sequence token, no padding token, and ``chat_template`` if given."""
    import pandas as pd
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, PreTrainedTokenizerFast

    words = pd.read_csv(reviews_csv)["review"].str.lower().str.split().explode().value_counts().index[:3000]
    words = [w for w in words if w not in ("fresh", "rotten", "assistant:", "user:")]
    vocab = {w: i for i, w in enumerate(["[UNK]", "</s>", "fresh", "rotten", "assistant:", "user:", *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", eos_token="</s>")
    tokenizer.chat_template = chat_template
    directory = tmp_path_factory.mktemp(name)
    tokenizer.save_pretrained(directory)
    torch.manual_seed(0)
    config = config_cls(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, eos_token_id=1, bos_token_id=None, pad_token_id=None)
    auto = AutoModelForSequenceClassification if classifier else AutoModelForCausalLM
    auto.from_config(config).save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    """A 2-layer BERT, hidden 32."""
    from transformers import BertConfig

    return tiny_model(tmp_path_factory, "tiny-bert", BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=128))


@pytest.fixture(scope="session")
def tiny_distilbert(tmp_path_factory) -> str:
    """A 3-layer DistilBERT, dim 48: a second architecture and shape."""
    from transformers import DistilBertConfig

    return tiny_model(tmp_path_factory, "tiny-distilbert", DistilBertConfig(
        vocab_size=30522, dim=48, n_layers=3, n_heads=2, hidden_dim=96, max_position_embeddings=128))


@pytest.fixture(scope="session")
def tiny_mpnet(tmp_path_factory) -> str:
    """A 2-layer MPNet, hidden 32: a family with its own module names."""
    from transformers import MPNetConfig

    return tiny_model(tmp_path_factory, "tiny-mpnet", MPNetConfig(
        vocab_size=30527, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=130))


@pytest.fixture(scope="session")
def tiny_deberta(tmp_path_factory) -> str:
    """A 2-layer DeBERTa with DeBERTa-v3-base's attention settings, hidden 32: BERT's blocks, its own attention;
    saved from masked-LM pre-training, as DeBERTa-v3's checkpoints are, so its classifier's pooler starts random."""
    from transformers import DebertaV2Config

    return tiny_model(tmp_path_factory, "tiny-deberta", DebertaV2Config(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=128, pooler_hidden_size=32, relative_attention=True, pos_att_type=["p2c", "c2p"],
        position_biased_input=False, share_att_key=True, norm_rel_ebd="layer_norm", position_buckets=256, type_vocab_size=0),
        masked_lm=True)


@pytest.fixture(scope="session")
def tiny_modernbert(tmp_path_factory) -> str:
    """A 3-layer ModernBERT, hidden 32: a pre-norm encoder with fused projections."""
    from transformers import ModernBertConfig

    return tiny_model(tmp_path_factory, "tiny-modernbert", ModernBertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=128, pad_token_id=0, cls_token_id=101, sep_token_id=102, bos_token_id=101,
        eos_token_id=102))


@pytest.fixture(scope="session")
def reviews_csv(tmp_path_factory) -> Path:
    """400 real Rotten Tomatoes snippets as a user CSV file (columns review, sentiment)."""
    from autopeft.job.data import rotten_tomatoes

    frame = rotten_tomatoes().sample(n=400, random_state=1).rename(columns={"text": "review", "label": "sentiment"})
    path = tmp_path_factory.mktemp("data") / "reviews.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def ray_local():
    """The local Ray a search starts, shared by the tests."""
    from autopeft.job.load import parse_job
    from autopeft.run.pool import init_ray

    ray = init_ray(parse_job({"name": "tests", "model": "minilm-l6", "task": {"dataset": "rotten_tomatoes"}}))
    yield ray
    ray.shutdown()


TINY_FIDELITY = {"train_examples": 64, "eval_examples": 64, "batch_size": 16, "max_seq_length": 32, "learning_rate": 0.005}
# A quality floor under the majority label's rate (0.625 on reviews.csv's validation rows), which trials as short
# as TINY_FIDELITY's seldom leave: their trials are then above the floor, and on the front shown to a user.
TINY_FLOOR = 0.5


@pytest.fixture(scope="session")
def searched(tmp_path_factory, tiny_bert, reviews_csv, ray_local):
    """A finished 5-trial search on the tiny BERT (random sampler), shared by export and UI tests."""
    from autopeft.api import submit
    from autopeft.job.load import load_job

    directory = tmp_path_factory.mktemp("export-search")
    job = load_job(write_job(
        directory, model=tiny_bert,
        task={"train_file": str(reviews_csv), "text_columns": ["review"], "label_column": "sentiment", "validation_size": 100},
        fidelity=TINY_FIDELITY, budget={"trials": 5, "parallel": 2}, optimizer={"sampler": "random"},
        objectives={"quality_floor": TINY_FLOOR},
    ))
    submit(job, progress=False)
    return job


def trials_being_created(name: str, storage: str):
    """The trials of the study a search in another process is creating; None until its store and
    study exist. The store's connection is closed before it returns: a test that polls a server
    every second would otherwise hold a connection per look until the garbage collector ran, and
    PostgreSQL refuses clients past its hundredth."""
    import sqlalchemy.exc

    from autopeft.record.study import StudyRecord

    try:
        with StudyRecord._read(name, storage) as record:
            return record.study.trials
    except (KeyError, sqlalchemy.exc.SQLAlchemyError):  # its schema being written at this instant, or no study yet
        return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_job(directory: Path, **overrides) -> Path:
    """Write a job file into ``directory`` and return its path; ``overrides`` replace top-level keys."""
    job = {
        "name": "t",
        "model": "minilm-l6",
        "task": {"dataset": "rotten_tomatoes"},
        "search_space": "lora",
        "budget": {"trials": 2, "parallel": 1},
        "fidelity": {"train_examples": 32, "eval_examples": 32, "batch_size": 16, "max_seq_length": 32},
        "stores": {"run_dir": "run"},
    }
    job.update(overrides)
    path = directory / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


# -- exact counts: what the plan counts before training is what peft trains after wrapping --------

def random_point(space, rng):
    return {d.name: rng.randrange(len(d.choices)) for d in space.dimensions}


def base_model(model_dir, num_labels: int = 3):
    """The model with a ``num_labels`` classification head (0: a causal language model)."""
    from autopeft.workers.models import auto_class, pretrained

    path, extra = pretrained(model_dir)
    labels = {"num_labels": num_labels, "ignore_mismatched_sizes": True} if num_labels else {}
    return auto_class(num_labels).from_pretrained(path, **labels, **extra)


def three_trial_search(tmp_path, model: str, reviews_csv, search_space: str, baselines: list[str]):
    """Run a real search of 3 trials (2 at a time) beside ``baselines`` on the reviews; check that every
    trial and baseline finished with a quality in [0, 1], and return the job."""
    import optuna

    from autopeft.api import submit
    from autopeft.job.load import load_job

    job = load_job(write_job(
        tmp_path, model=model, search_space=search_space, baselines=baselines,
        task={"train_file": str(reviews_csv), "text_columns": ["review"], "label_column": "sentiment", "validation_size": 100},
        fidelity=TINY_FIDELITY, budget={"trials": 3, "parallel": 2}, optimizer={"sampler": "autopeft", "n_startup_trials": 2},
    ))
    summary = submit(job, progress=False)
    assert summary.finished == 3 and summary.failed == 0
    assert set(summary.baselines) == set(baselines)
    study = optuna.load_study(study_name=job.name, storage=job.optuna_storage)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and "skipped" not in t.user_attrs]
    assert len(complete) == 3 and all(0.0 <= t.values[0] <= 1.0 for t in complete)
    return job


def check_counts(model_dir: str, space_name: str, n_points: int, seed: int = 0):
    """Decode ``n_points`` random non-empty points of the space; each counts exactly what peft trains."""
    import random

    from autopeft.space.search_space import load_space
    from autopeft.workers.build import apply_plan, count_trainable
    from autopeft.workers.models import model_shape

    shape = model_shape(model_dir, num_labels=3)
    assert shape.base_params == sum(p.numel() for p in base_model(model_dir).parameters())
    space = load_space(space_name, shape)
    rng = random.Random(seed)
    checked = 0
    while checked < n_points:
        plan = space.decode(random_point(space, rng))
        if plan.is_empty:
            continue
        model = apply_plan(base_model(model_dir), plan, shape)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert count_trainable(plan, shape) == trainable, plan.describe()
        checked += 1


def as_if_trained(model) -> None:
    import torch

    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:  # most methods start as the identity: move them so the output changes
                parameter.add_(torch.randn_like(parameter) * 0.05)


def fitting_baselines(shape) -> dict:
    """The plan of every named baseline that fits the model, by name (those that do not are refused)."""
    from autopeft.errors import UserError
    from autopeft.run.prepare import baseline_plans
    from autopeft.workers.methods.base import every_baseline

    plans = {}
    for name in every_baseline():
        try:
            plans.update(baseline_plans([name], shape))
        except UserError:
            continue
    return plans


def reloads_identically(model_dir: str, plan, shape, directory) -> None:
    """The plan counts what peft trains, changes the output once trained, and reloads with identical logits."""
    import torch

    from autopeft.workers.build import apply_plan, count_trainable, load_adapter, save_adapter

    torch.manual_seed(0)
    model = apply_plan(base_model(model_dir), plan, shape)
    assert count_trainable(plan, shape) == sum(p.numel() for p in model.parameters() if p.requires_grad), plan.describe()
    as_if_trained(model)
    inputs = {"input_ids": torch.randint(1, 1000, (1, 9)), "attention_mask": torch.ones(1, 9, dtype=torch.long)}
    model.eval()
    with torch.no_grad():
        expected = model(**inputs).logits
        assert not torch.allclose(base_model(model_dir).eval()(**inputs).logits, expected, atol=1e-4), plan.describe()
    save_adapter(model, directory)
    reloaded = load_adapter(base_model(model_dir), directory).eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(**inputs).logits, expected, atol=1e-5), plan.describe()
