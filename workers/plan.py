"""A Plan in peft terms: its exact parameter count, the peft configs that build it, save and load.

A plan with one method becomes one peft model (``get_peft_model``; a pure-LoRA plan is a plain
``LoraConfig``). A plan that combines methods injects each into the same model, in the order
LoRA, IA3, prefix, bottleneck adapters, and saves as ``autopeft_adapter.json`` (the configs)
plus ``adapter_model.safetensors`` (the trained tensors); ``load_adapter`` reads both forms.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import workers.methods  # noqa: F401  (registers the bottleneck and prefix methods with peft)
from workers.methods import adapter_params, prefix_params
from workers.models import HEAD_MODULES, ModelShape
from workers.types import IA3_FEEDFORWARD_GROUPS, Plan

COMPOSITE_FILE = "autopeft_adapter.json"
WEIGHTS_FILE = "adapter_model.safetensors"
ADAPTER_PREFIXES = ("lora_", "ia3_", "kv_prefix_", "bottleneck_")
MERGEABLE = {"lora": True, "ia3": True, "kv_prefix": False, "bottleneck": False, "full": True}


def count_trainable(plan: Plan, shape: ModelShape) -> int:
    """Exact number of parameters the plan trains: its modules plus the classification head."""
    if plan.full:
        return shape.base_params
    total = shape.head_params
    for target in plan.active_lora():
        fan_in, fan_out = shape.group_dims[target.group]
        total += target.rank * (fan_in + fan_out) * len(target.layers)
    if "ia3" in plan.methods:
        for group in plan.ia3_groups:
            fan_in, fan_out = shape.group_dims[group]
            total += (fan_in if group in IA3_FEEDFORWARD_GROUPS else fan_out) * len(plan.ia3_layers)
    for sizes in (plan.serial_ffn, plan.serial_attention, plan.parallel_ffn):
        total += sum(adapter_params(shape.hidden_size, size) for _, size in sizes)
    total += sum(prefix_params(shape.hidden_size, length) for _, length in plan.prefix)
    return total


def trainable_pct(params: int, shape: ModelShape) -> float:
    return 100.0 * params / shape.base_params


def _group_pattern(shape: ModelShape, group: str, layers: tuple[int, ...] | None = None) -> str:
    arch = shape.architecture
    layer = r"\d+" if layers is None else "(?:" + "|".join(str(i) for i in layers) + ")"
    return rf"{re.escape(arch.layers_path)}\.{layer}\.{re.escape(arch.groups[group])}"


def lora_config(plan: Plan, shape: ModelShape, base_model_name_or_path: str | None = None):
    """The plain ``peft.LoraConfig`` for the plan's LoRA modules.

    ``target_modules`` is one regular expression naming exactly the (layer, module) pairs of the
    plan; ``rank_pattern`` and ``alpha_pattern`` give each module group, in each of its layer
    blocks, its own rank and alpha.
    """
    from peft import LoraConfig, TaskType

    active = plan.active_lora()
    if not active:
        raise ValueError("the plan has no LoRA module")
    alternatives = [_group_pattern(shape, t.group, t.layers) for t in active]
    first = active[0]
    return LoraConfig(
        task_type=TaskType.SEQ_CLS,
        base_model_name_or_path=base_model_name_or_path,
        target_modules=r".*\.(?:" + "|".join(alternatives) + ")",
        r=first.rank,
        lora_alpha=first.alpha,
        rank_pattern={_group_pattern(shape, t.group, t.layers): t.rank for t in active},
        alpha_pattern={_group_pattern(shape, t.group, t.layers): t.alpha for t in active},
        lora_dropout=0.0,
    )


def peft_configs(plan: Plan, shape: ModelShape, base_model_name_or_path: str | None = None) -> list:
    """One peft config per method of the plan, in the order they are applied."""
    from peft import IA3Config, TaskType

    from workers.methods import BottleneckConfig, KVPrefixConfig

    arch = shape.architecture
    common = {"task_type": TaskType.SEQ_CLS, "base_model_name_or_path": base_model_name_or_path}
    configs = []
    for method in plan.methods:
        if method == "lora":
            configs.append(lora_config(plan, shape, base_model_name_or_path))
        elif method == "ia3":
            targets = r".*\.(?:" + "|".join(_group_pattern(shape, g, plan.ia3_layers) for g in plan.ia3_groups) + ")"
            feedforward = [g for g in plan.ia3_groups if g in IA3_FEEDFORWARD_GROUPS]
            ff_pattern = (r".*\.(?:" + "|".join(_group_pattern(shape, g, plan.ia3_layers) for g in feedforward) + ")"
                          if feedforward else r"(?!x)x")
            configs.append(IA3Config(target_modules=targets, feedforward_modules=ff_pattern, **common))
        elif method == "kv_prefix":
            configs.append(KVPrefixConfig(layers_path=arch.layers_path, attention_module=arch.self_attention,
                                          lengths={str(layer): size for layer, size in plan.prefix}, **common))
        elif method == "bottleneck":
            configs.append(BottleneckConfig(
                layers_path=arch.layers_path, ffn_block=arch.ffn_block, attention_block=arch.attention_block,
                serial_ffn={str(i): s for i, s in plan.serial_ffn},
                serial_attention={str(i): s for i, s in plan.serial_attention},
                parallel_ffn={str(i): s for i, s in plan.parallel_ffn},
                parallel_scaling=plan.parallel_scaling, **common,
            ))
    return configs


def _head_names(model) -> set[str]:
    modules = dict(model.named_modules())
    heads = [n for n in modules if n and n.split(".")[-1].endswith(HEAD_MODULES)]
    return {n for n in heads if not any(n.startswith(o + ".") for o in heads if o != n)}


def _compose(model, configs: list):
    """Inject every config into ``model``; train only the adapters and the classification head."""
    import warnings

    from peft import inject_adapter_in_model

    for config in configs:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            inject_adapter_in_model(config, model, adapter_name="default")
    heads = _head_names(model)
    for name, parameter in model.named_parameters():
        in_head = any(name.startswith(h + ".") for h in heads)
        parameter.requires_grad = in_head or any(p in name for p in ADAPTER_PREFIXES)
    model.autopeft_configs = configs
    return model


def apply_plan(model, plan: Plan, shape: ModelShape):
    """Wrap ``model`` with peft according to ``plan``; only the plan's modules and the head stay trainable."""
    if plan.full:
        for parameter in model.parameters():
            parameter.requires_grad = True
        return model
    from peft import get_peft_model

    configs = peft_configs(plan, shape, getattr(model, "name_or_path", None))
    if not configs:
        raise ValueError("the plan has no adapter module")
    if len(configs) == 1:
        return get_peft_model(model, configs[0])
    return _compose(model, configs)


def save_adapter(model, directory: str | Path) -> None:
    """Save what ``apply_plan`` built: peft's own format, or the composite format for several methods."""
    from peft import PeftModel
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if isinstance(model, PeftModel):
        model.save_pretrained(str(directory))
        return
    tensors = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    save_file(tensors, str(directory / WEIGHTS_FILE))
    configs = getattr(model, "autopeft_configs", None)
    methods = [{"peft_type": str(c.peft_type.value), "config": c.to_dict()} for c in configs] if configs else []
    (directory / COMPOSITE_FILE).write_text(json.dumps({"methods": methods, "full": configs is None}, indent=2, default=str))


def load_adapter(base_model, directory: str | Path):
    """Rebuild a saved plan on ``base_model`` (a transformers model) and load its trained tensors."""
    from peft import PeftModel
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
    from peft.utils import PeftType
    from safetensors.torch import load_file

    directory = Path(directory)
    if not (directory / COMPOSITE_FILE).is_file():
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
        model = _compose(base_model, configs)
    missing = set(tensors) - {n for n, _ in model.named_parameters()}
    if missing:
        raise ValueError(f"{directory} holds tensors the model does not have: {sorted(missing)[:3]}")
    model.load_state_dict(tensors, strict=False)
    return model
