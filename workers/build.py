"""A Plan in peft terms: its exact parameter count, the peft configs that build it, save and load.

A plan with one peft config becomes one peft model (``get_peft_model``; a pure-LoRA plan is a
plain ``LoraConfig``). A plan whose methods need several configs injects each into the same
model, in plan order, and saves as ``autopeft_adapter.json`` (the configs) plus
``adapter_model.safetensors`` (the trained tensors); ``load_adapter`` reads both forms.
"""

from __future__ import annotations

import contextlib
import json
import re
import warnings
from pathlib import Path

from .methods import METHODS, method
from .models import ModelShape, frozen, head_modules, no_pooler, pooler_modules
from .plan import Plan

COMPOSITE_FILE = "autopeft_adapter.json"
WEIGHTS_FILE = "adapter_model.safetensors"
POINT_FILE = "autopeft_point.json"
PEFT_CONFIG_FILE = "adapter_config.json"


def count_trainable(plan: Plan, shape: ModelShape) -> int:
    """Exact number of parameters the plan trains: its modules plus the classification head (and the
    pooler, or a LoRA on it, where the plan trains one)."""
    if plan.full:
        return shape.base_params - shape.frozen_params
    head = shape.head_params + (shape.pooler_params if plan.pooler else 0)
    pooler_lora = sum(_pooler_lora_module(plan, shape, fan_in, fan_out) for fan_in, fan_out in shape.pooler_linears.values())
    return head + pooler_lora + sum(method(name).count(plan[name], shape) for name in plan.methods)


def _pooler_lora_module(plan: Plan, shape: ModelShape, fan_in: int, fan_out: int) -> int:
    """Parameters of the plan's LoRA on one of the pooler's linear layers (0 without one); it shares the
    plan's LoRA variant (a DoRA magnitude too) when the plan has a LoRA part."""
    if not plan.pooler_rank:
        return 0
    lora = method("lora")
    return lora.per_module(plan.pooler_rank, fan_in, fan_out, plan["lora"] if "lora" in plan else lora.part(()))


def _pooler_lora(plan: Plan, shape: ModelShape, fields: dict[str, dict]) -> None:
    """Add the plan's LoRA on the pooler to its LoRA config's fields, or as a LoRA config of its own."""
    if not plan.pooler_rank:
        return
    if not shape.pooler_linears:
        raise ValueError(f"the plan puts a LoRA on the pooler, but {no_pooler(shape)}")
    pattern = "|".join(re.escape(name) for name in shape.pooler_linears)
    rank, alpha = plan.pooler_rank, 2.0 * plan.pooler_rank
    lora = fields.get("LORA")
    if lora is None:
        fields["LORA"] = {"target_modules": rf"(?:.*\.)?(?:{pattern})", "r": rank, "lora_alpha": alpha,
                          "lora_dropout": 0.0}
        return
    lora["target_modules"] = lora["target_modules"][:-1] + f"|{pattern})"
    lora["rank_pattern"] = {**lora.get("rank_pattern", {}), pattern: rank}
    lora["alpha_pattern"] = {**lora.get("alpha_pattern", {}), pattern: alpha}


def peft_configs(plan: Plan, shape: ModelShape, base_model_name_or_path: str | None = None) -> list:
    """One peft config per peft type the plan's methods use, in plan order.

    Methods that share a peft type (serial and parallel adapters) fill one config together. A plan
    that trains the pooler with one config names it in ``modules_to_save``, as peft does the
    classifier (several configs train it in place: ``_compose``).
    """
    from peft import TaskType
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
    from peft.utils import PeftType

    fields: dict[str, dict] = {}
    for name in plan.methods:
        descriptor = method(name)
        if descriptor.peft_type is None:
            continue
        merged = fields.setdefault(descriptor.peft_type, {})
        for key, value in descriptor.peft_kwargs(plan[name], shape).items():
            if key in merged and merged[key] != value:
                raise ValueError(f"methods of peft type {descriptor.peft_type} disagree on '{key}'")
            merged[key] = value
    _pooler_lora(plan, shape, fields)
    task_type = TaskType.SEQ_CLS if shape.num_labels else TaskType.CAUSAL_LM
    common = {"task_type": task_type, "base_model_name_or_path": base_model_name_or_path}
    if plan.pooler and len(fields) == 1:
        common["modules_to_save"] = [shape.family.pooler]
    return [PEFT_TYPE_TO_CONFIG_MAPPING[PeftType[peft_type]](**common, **kwargs) for peft_type, kwargs in fields.items()]


def _compose(model, configs: list, pooler: str | None = None):
    """Inject every config into ``model``; train only the adapters and the classification head (and
    the module named ``pooler``, where given)."""
    from peft import inject_adapter_in_model
    from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING

    for config in configs:
        tuner = PEFT_TYPE_TO_TUNER_MAPPING[config.peft_type]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            if tuner.uses_shared_state:  # VeRA: its layers hold the projections the tuner shares among them
                tuner(model, config, adapter_name="default")
            else:
                inject_adapter_in_model(config, model, adapter_name="default")
    heads = head_modules(model) | (pooler_modules(model, pooler) if pooler else set())
    prefixes = tuple({m.parameter_prefix for m in METHODS.values() if m.parameter_prefix})
    for name, parameter in model.named_parameters():
        in_head = any(name.startswith(h + ".") for h in heads)
        parameter.requires_grad = in_head or any(p in name for p in prefixes)
    model.autopeft_configs = configs
    return model


def parameter_groups(model, plan: Plan, learning_rate: float) -> list[dict]:
    """The trainable parameters for the optimizer, each method's at ``learning_rate`` times its scale (the
    plan's, else ``Method.learning_rate_scale``), the classification head's at ``learning_rate``."""
    scales = {method(n).parameter_prefix: plan.learning_rate_scale(n) for n in plan.methods if method(n).parameter_prefix}
    by_scale: dict[float, list] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            scale = plan.learning_rate_scale("full") if plan.full else next((s for p, s in scales.items() if p in name), 1.0)
            by_scale.setdefault(scale, []).append(parameter)
    return [{"params": params, "lr": learning_rate * scale} for scale, params in by_scale.items()]


@contextlib.contextmanager
def _peft_quiet():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Unsupported layer type")  # LN tuning on a norm: peft's own method
        yield


def _trained_in_fp32(model):
    """Cast what trains to fp32 on a base loaded in a lower precision (``Fidelity.base_dtype``): AdamW's
    updates to bf16 weights would be rounded away. peft makes most adapters fp32 already, but not the
    copies of the base's own weights it trains (the head, LN tuning's norms, BitFit's biases)."""
    import torch

    for parameter in model.parameters():
        if parameter.requires_grad and parameter.is_floating_point() and parameter.dtype != torch.float32:
            parameter.data = parameter.data.float()
    return model


def _autocast_outputs(model):
    """Under autocast, each layer peft wraps returns the dtype the layer it wraps would (autocast's): peft's LoHa,
    LoKr, VeRA and OFT add an fp32 delta to it, and attention code that mixes the two dtypes fails (DeBERTa's
    masks bf16 scores with fp32's lowest value)."""
    import torch
    from peft.tuners.tuners_utils import BaseTunerLayer

    def cast(module, inputs, output):
        device = output.device.type
        if torch.is_autocast_enabled(device) and output.is_floating_point() and output.dtype != torch.get_autocast_dtype(device):
            return output.to(torch.get_autocast_dtype(device))
        return None

    for module in model.modules():
        if isinstance(module, BaseTunerLayer) and isinstance(getattr(module, "base_layer", None), torch.nn.Linear):
            module.register_forward_hook(cast)
    return model


def apply_plan(model, plan: Plan, shape: ModelShape):
    """Wrap ``model`` with peft according to ``plan``; only the plan's modules and the head stay trainable, in fp32."""
    if plan.full:
        for name, parameter in model.named_parameters():
            parameter.requires_grad = not frozen(name, shape.family)
        return _trained_in_fp32(model)
    from peft import get_peft_model

    configs = peft_configs(plan, shape, getattr(model, "name_or_path", None))
    if not configs:
        raise ValueError("the plan has no adapter module")
    with _peft_quiet():
        model = get_peft_model(model, configs[0]) if len(configs) == 1 else _compose(model, configs, shape.family.pooler if plan.pooler else None)
    model.autopeft_plan = plan
    for name in plan.methods:
        method(name).after_build(model, plan[name])
    return _autocast_outputs(_trained_in_fp32(model))


def save_adapter(model, directory: str | Path) -> None:
    """Save what ``apply_plan`` built: peft's own format, or the composite format for several configs."""
    from peft import PeftModel
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    plan = getattr(model, "autopeft_plan", None)
    rewrites = [(method(n), plan[n]) for n in plan.methods if method(n).rewrites_export(plan[n])] if plan else []
    if isinstance(model, PeftModel):
        model.save_pretrained(str(directory))
        if rewrites:  # in peft's own files
            from safetensors.torch import load_file

            tensors, config = load_file(str(directory / WEIGHTS_FILE)), json.loads((directory / PEFT_CONFIG_FILE).read_text())
            for descriptor, part in rewrites:
                descriptor.export(part, model, tensors, config)
            save_file(tensors, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
            (directory / PEFT_CONFIG_FILE).write_text(json.dumps(config, indent=2, default=str))
        return
    tensors = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    configs = getattr(model, "autopeft_configs", None)
    methods = [{"peft_type": str(c.peft_type.value), "config": c.to_dict()} for c in configs] if configs else []
    for descriptor, part in rewrites:
        descriptor.export(part, model, tensors, next(m["config"] for m in methods if m["peft_type"] == descriptor.peft_type))
    save_file(tensors, str(directory / WEIGHTS_FILE))
    (directory / COMPOSITE_FILE).write_text(json.dumps({"methods": methods, "full": configs is None}, indent=2, default=str))


def load_adapter(base_model, directory: str | Path):
    """Rebuild a saved plan on ``base_model`` (a transformers model) and load its trained tensors.

    A classifier's outputs are named after the search's classes (``config.id2label``), unless the
    base model already names them.
    """
    from peft import PeftModel
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
    from peft.utils import PeftType
    from safetensors.torch import load_file

    directory = Path(directory)
    _name_classes(base_model, directory)
    if not (directory / COMPOSITE_FILE).is_file():
        with _peft_quiet():
            return PeftModel.from_pretrained(base_model, str(directory))
    manifest = json.loads((directory / COMPOSITE_FILE).read_text())
    tensors = load_file(str(directory / WEIGHTS_FILE))
    if manifest.get("full"):
        model = base_model
    else:
        configs = []
        for entry in manifest["methods"]:
            config_cls = PEFT_TYPE_TO_CONFIG_MAPPING[PeftType(entry["peft_type"])]
            fields = {k: v for k, v in entry["config"].items() if k in config_cls.__dataclass_fields__ and k != "peft_type"}
            configs.append(config_cls(**fields))
        with _peft_quiet():
            model = _compose(base_model, configs)
    missing = set(tensors) - {n for n, _ in model.named_parameters()}
    if missing:
        raise ValueError(f"{directory} holds tensors the model does not have: {sorted(missing)[:3]}")
    model.load_state_dict(tensors, strict=False)
    return model


def _name_classes(model, directory: Path) -> None:
    """Set ``id2label`` and ``label2id`` from the exported point's ``labels`` where the model's are transformers' LABEL_i."""
    point = directory / POINT_FILE
    labels = json.loads(point.read_text()).get("labels") if point.is_file() else None
    config = getattr(model, "config", None)
    if not labels or config is None or getattr(config, "num_labels", None) != len(labels):
        return
    if any(name != f"LABEL_{i}" for i, name in config.id2label.items()):
        return
    config.id2label = dict(enumerate(labels))
    config.label2id = {name: i for i, name in enumerate(labels)}
