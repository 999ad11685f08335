"""Decoder families and recognition by structure: exact counts for every method on tiny models of each."""

from __future__ import annotations

import pytest
import yaml

from autopeft.errors import UserError
from autopeft.space.search_space import load_space
from autopeft.workers.methods import method
from autopeft.workers.models import ModelNotFound, model_shape
from conftest import check_counts, tiny_decoder, tiny_model

ATTENTION = dict(num_attention_heads=4, num_key_value_heads=2)  # grouped-query attention: k and v narrower
DECODERS = {
    "llama": lambda t: t.LlamaConfig(vocab_size=30522, hidden_size=64, intermediate_size=96, num_hidden_layers=3, **ATTENTION),
    "mistral": lambda t: t.MistralConfig(vocab_size=30522, hidden_size=64, intermediate_size=96, num_hidden_layers=3, **ATTENTION),
    "qwen2": lambda t: t.Qwen2Config(vocab_size=30522, hidden_size=64, intermediate_size=96, num_hidden_layers=3, **ATTENTION),
    "qwen3": lambda t: t.Qwen3Config(vocab_size=30522, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                                     head_dim=16, **ATTENTION),
    "gemma": lambda t: t.GemmaConfig(vocab_size=30522, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                                     head_dim=16, **ATTENTION),
    "gemma2": lambda t: t.Gemma2Config(vocab_size=30522, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                                       head_dim=16, **ATTENTION),
    "gemma3": lambda t: t.Gemma3Config(  # an image-text model: a vision tower beside the language model's layers
        text_config=dict(vocab_size=30522, hidden_size=64, intermediate_size=96, num_hidden_layers=3, head_dim=16,
                         layer_types=["sliding_attention", "sliding_attention", "full_attention"], **ATTENTION),
        vision_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2, image_size=28,
                           patch_size=14), mm_tokens_per_image=4),
    "nemotron": lambda t: t.NemotronConfig(vocab_size=30522, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                                           head_dim=16, bos_token_id=0, eos_token_id=0, **ATTENTION),  # ungated MLP
    "glm4": lambda t: t.Glm4Config(vocab_size=30522, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                                   head_dim=16, pad_token_id=0, eos_token_id=0, **ATTENTION),  # gate and input fused
    "phi3": lambda t: t.Phi3Config(vocab_size=30522, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                                   pad_token_id=0, **ATTENTION),
    "gpt2": lambda t: t.GPT2Config(vocab_size=30522, n_embd=64, n_layer=3, n_head=4),
    "gpt_bigcode": lambda t: t.GPTBigCodeConfig(vocab_size=30522, n_embd=64, n_layer=3, n_head=4),  # GPT-2's layers as Linear
    "gpt_neox": lambda t: t.GPTNeoXConfig(vocab_size=30522, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                                          num_attention_heads=4, rotary_pct=0.25, bos_token_id=0, eos_token_id=0),
    "phi": lambda t: t.PhiConfig(vocab_size=30522, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                                 partial_rotary_factor=0.5, **ATTENTION),
    "starcoder2": lambda t: t.Starcoder2Config(vocab_size=30522, hidden_size=64, intermediate_size=96,
                                               num_hidden_layers=3, **ATTENTION),
    "falcon": lambda t: t.FalconConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                                       bos_token_id=0, eos_token_id=0),  # multi-query: keys and values one head wide
    "falcon-gqa": lambda t: t.FalconConfig(  # Falcon-40B's and Falcon2's layout: grouped-query, a norm each for attention and MLP
        vocab_size=30522, hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_kv_heads=2,
        new_decoder_architecture=True, bos_token_id=0, eos_token_id=0),
    "bloom": lambda t: t.BloomConfig(vocab_size=30522, hidden_size=64, n_layer=3, n_head=4),
    "opt": lambda t: t.OPTConfig(vocab_size=30522, hidden_size=64, ffn_dim=96, num_hidden_layers=3, num_attention_heads=4,
                                 word_embed_proj_dim=64),
}
FAMILY = {"llama": "llama", "mistral": "llama", "qwen2": "llama", "qwen3": "llama", "gemma": "llama", "gemma2": "llama",
          "gemma3": "gemma3", "nemotron": "nemotron", "glm4": "glm", "phi3": "phi3", "gpt2": "gpt2", "gpt_bigcode": "gpt2", "gpt_neox": "gpt_neox", "phi": "phi", "starcoder2": "starcoder2", "opt": "opt",
          "falcon": "falcon", "falcon-gqa": "falcon", "bloom": "bloom"}


@pytest.fixture(scope="module", params=sorted(DECODERS))
def decoder(request, tmp_path_factory):
    import transformers

    return request.param, tiny_model(tmp_path_factory, f"tiny-{request.param}", DECODERS[request.param](transformers))


def _space(tmp_path, shape) -> str:
    """Every method that fits the family, IA3 where it goes by default (``ia3: {}``), LoRA on every other group."""
    groups = shape.family.groups
    ia3 = _ia3_groups(shape)
    lora = {g: [0, 2, 8] for g in groups if g not in ia3}
    path = tmp_path / "space.yaml"
    modules = {"lora": {"groups": lora, "layer_groups": 2}, "ia3": {}, "serial": {"sizes": [0, 4, 8], "attention": True},
               "parallel": {"sizes": [0, 4]}, "prefix": {"sizes": [0, 2, 5]}}
    path.write_text(yaml.safe_dump({"name": "decoder", "layers": "per_module", "modules": {
        name: entry for name, entry in modules.items() if method(name).fits(shape.family)}}))
    return str(path)


def _ia3_groups(shape) -> tuple[str, ...]:
    fused = "query_key_value" in shape.family.groups
    return (("query_key_value",) if fused else ("key", "value")) + ("ffn_out",)


def test_every_method_counts_exactly_what_peft_trains_on_every_decoder(decoder, tmp_path):
    model_type, path = decoder
    shape = model_shape(path, num_labels=3)
    assert shape.family.name == FAMILY[model_type] and shape.num_layers == 3
    # 2 of 4 heads under grouped-query attention, 1 under multi-query attention (Falcon, GPT-BigCode), else all 4
    assert shape.kv_width == {"gpt2": 64, "gpt_neox": 64, "opt": 64, "bloom": 64, "falcon": 16, "gpt_bigcode": 16}.get(model_type, 32)
    if "key" in shape.family.groups:
        assert shape.group_dims["key"] == (64, shape.kv_width)
    check_counts(path, _space(tmp_path, shape), 10)


def test_adapters_in_a_decoder_block_save_and_reload_with_identical_outputs(decoder, tmp_path):
    import torch

    from autopeft.workers.build import apply_plan, load_adapter, save_adapter
    from conftest import base_model

    model_type, path = decoder
    shape = model_shape(path, num_labels=3)
    plan = load_space(_space(tmp_path, shape), shape).largest_plan()
    unfit = {"opt": {"serial", "parallel"}, "bloom": {"prefix"}}.get(model_type, set())  # no FFN module; ALiBi
    assert {"serial", "parallel", "prefix"} - unfit <= set(plan.methods) and not unfit & set(plan.methods)
    assert "serial" in unfit or plan["serial"].attention
    assert plan["ia3"].groups == _ia3_groups(shape)  # ``ia3: {}`` scales what the family has
    torch.manual_seed(0)
    model = apply_plan(base_model(path), plan, shape)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:  # as if trained: up-projections leave zero, so adapters change the output
                parameter.add_(torch.randn_like(parameter) * 0.05)
    inputs = {"input_ids": torch.randint(1, 1000, (1, 9)), "attention_mask": torch.ones(1, 9, dtype=torch.long)}
    model.eval()
    with torch.no_grad():
        expected = model(**inputs).logits
        assert not torch.allclose(base_model(path).eval()(**inputs).logits, expected, atol=1e-4)
    save_adapter(model, tmp_path / "adapter")
    reloaded = load_adapter(base_model(path), tmp_path / "adapter").eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(**inputs).logits, expected, atol=1e-5)


def test_the_ia3_and_lora_baselines_fit_every_decoder_adapting_a_fused_projection_where_there_is_one(decoder, tmp_path):
    from autopeft.run.prepare import baseline_plans
    from conftest import reloads_identically

    model_type, path = decoder
    shape = model_shape(path, num_labels=3)
    plans = baseline_plans(["ia3", "lora-r8", "lora-mlp-r8"], shape)  # each fits: none is refused
    fused = "query_key_value" in shape.family.groups
    gated = ("ffn_gate", "ffn_in", "ffn_out")
    gate_in = ("ffn_gate_in", "ffn_out")
    mlp = {"llama": gated, "gemma3": gated, "phi3": gate_in, "glm": gate_in}.get(FAMILY[model_type], ("ffn_in", "ffn_out"))
    assert plans["ia3"]["ia3"].groups == _ia3_groups(shape)
    assert [t.group for t in plans["lora-r8"]["lora"].targets] == (["query_key_value"] if fused else ["query", "value"])
    assert tuple(t.group for t in plans["lora-mlp-r8"]["lora"].targets) == mlp
    for name, plan in plans.items():
        reloads_identically(path, plan, shape, tmp_path / name)


@pytest.mark.parametrize("decoder", ["gpt2", "gpt_bigcode"], indirect=True)
def test_every_baseline_that_fits_a_model_built_like_gpt2_trains_in_its_own_weight_layout(decoder, tmp_path):
    """GPT-2 stores its weights (in, out) in Conv1D layers; GPT-BigCode (StarCoder), built like it, in torch's Linear:
    BitFit, taking GPT-BigCode's layers for GPT-2's, multiplied by the transposed weight and failed in training."""
    from conftest import fitting_baselines, reloads_identically

    model_type, path = decoder
    shape = model_shape(path, num_labels=3)
    assert shape.family.fan_in_fan_out == (model_type == "gpt2")
    plans = fitting_baselines(shape)
    assert {"bitfit", "ia3", "lora-r8", "houlsby"} <= set(plans)
    assert ({"loha-r8", "lokr-r8", "oft"} <= set(plans)) == (model_type == "gpt_bigcode")  # peft's wrap Linear alone
    for name, plan in plans.items():
        if name != "full":
            reloads_identically(path, plan, shape, tmp_path / name)


@pytest.mark.parametrize("decoder", sorted(set(DECODERS) - {"bloom"}), indirect=True)
def test_a_prefix_is_seen_by_every_query_with_padding_and_through_cached_generation(decoder):
    """Right padding leaves the real positions' logits unchanged (an explicit mask, widened) as without
    padding (the kernel's implicit causal mask, made explicit); greedy decoding with the key/value
    cache picks the tokens a full forward pass without the cache picks."""
    import torch

    from autopeft.workers.build import apply_plan
    from autopeft.workers.methods.prefix import Prefix
    from autopeft.workers.plan import Plan
    from conftest import base_model

    model_type, path = decoder
    shape = model_shape(path, num_labels=0)
    model = apply_plan(base_model(path, num_labels=0), Plan.of(Prefix(((0, 3), (2, 5)))), shape).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.normal_(0, 1.0)
    torch.manual_seed(0)
    ids = torch.randint(1, 1000, (2, 7))
    pad = torch.zeros(2, 2, dtype=torch.long)
    with torch.no_grad():
        unpadded = model(input_ids=ids).logits
        padded = model(input_ids=torch.cat([ids, pad], 1),
                       attention_mask=torch.cat([torch.ones_like(ids), pad], 1)).logits[:, :7]
        with model.disable_adapter():
            assert not torch.allclose(model(input_ids=ids).logits, unpadded, atol=1e-3)
        generated = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=4,
                                   do_sample=False, pad_token_id=0)
        uncached = ids
        for _ in range(4):
            step = model(input_ids=uncached, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            uncached = torch.cat([uncached, step], 1)
    assert torch.allclose(padded, unpadded, atol=1e-5)
    assert torch.equal(generated, uncached)


FITTING = {  # the built-in spaces that fit each family
    "llama": "autopeft, catalogue, decoder, lora, mixed",
    "gemma3": "autopeft, catalogue, decoder, lora, mixed",
    "nemotron": "autopeft, catalogue, lora, mixed",
    "glm": "autopeft, catalogue, decoder, lora, mixed",
    "phi": "autopeft, catalogue, lora, mixed",
    "starcoder2": "autopeft, catalogue, lora, mixed",
    "phi3": "autopeft, catalogue, lora",
    "gpt2": "autopeft, catalogue, lora",
    "gpt_neox": "autopeft, catalogue, lora",
    "falcon": "autopeft, catalogue, lora",
    "bloom": "catalogue, lora",
    "opt": "catalogue, lora",
}


def test_the_shipped_spaces_that_fit_a_decoder_count_exactly_and_the_others_name_those_that_fit(decoder):
    """The default ``lora`` space fits every family: where a family fuses query, key and value (or the
    gated MLP's gate and input) it adapts the fused projection in their place."""
    model_type, path = decoder
    family = FAMILY[model_type]
    shape = model_shape(path, num_labels=2)
    for name in ("lora", "decoder", "autopeft"):
        if name in FITTING[family].split(", "):
            check_counts(path, name, 6)
        else:
            with pytest.raises(UserError, match=f"{family} models.*; or a built-in space that fits {family} models: "
                                                f"{FITTING[family]}$"):
                load_space(name, shape)
    groups = {d.name.split(".")[1] for d in load_space("lora", shape).dimensions if d.name.startswith("lora.")}
    fused = {"query_key_value"} if "query_key_value" in shape.family.groups else {"query", "key", "value"}
    fused |= {"ffn_gate_in"} if "ffn_gate_in" in shape.family.groups else {"ffn_in"}
    assert groups == fused | {"attention_output", "ffn_out"}


def test_a_structural_clone_of_a_family_is_recognised(tmp_path_factory):
    from transformers import CamembertConfig

    path = tiny_model(tmp_path_factory, "tiny-camembert", CamembertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64))
    shape = model_shape(path, num_labels=2)
    assert (shape.model_type, shape.family.name) == ("camembert", "bert")
    check_counts(path, "mixed", 6)


@pytest.mark.parametrize("config", ["Gemma3TextConfig", "SmolLM3Config", "Olmo2Config"])
def test_newer_decoders_built_like_llama_are_recognised_and_count_exactly(config, tmp_path_factory):
    import transformers

    extra = {"head_dim": 16} if config == "Gemma3TextConfig" else {"pad_token_id": 0}
    path = tiny_model(tmp_path_factory, f"tiny-{config}", getattr(transformers, config)(
        vocab_size=30522, hidden_size=64, intermediate_size=96, num_hidden_layers=3, **ATTENTION, **extra))
    shape = model_shape(path, num_labels=2)
    assert shape.family.name == "llama" and shape.group_dims["key"] == (64, 32)
    check_counts(path, "decoder", 6)


def test_an_unsupported_structure_names_the_supported_families(tmp_path_factory):
    """A Funnel Transformer, and a mixture of experts whose first layer is a dense Llama layer."""
    from transformers import FunnelConfig, Qwen3MoeConfig

    funnel = tiny_model(tmp_path_factory, "tiny-funnel", FunnelConfig(
        vocab_size=30522, d_model=32, n_head=2, d_head=16, d_inner=64, block_sizes=[1, 1]))
    experts = tiny_model(tmp_path_factory, "tiny-qwen3-moe", Qwen3MoeConfig(
        vocab_size=30522, hidden_size=64, intermediate_size=96, moe_intermediate_size=32, num_hidden_layers=2,
        num_experts=4, mlp_only_layers=[0], head_dim=16, **ATTENTION))
    for path in (funnel, experts):
        with pytest.raises(ModelNotFound, match="supported families: bert .*gpt2 .*llama .*phi3"):
            model_shape(path, num_labels=2)
    with pytest.raises(ModelNotFound, match="^model type 'qwen3_moe' has 1 of its 2 layers built like llama's, and the "
                                            "others otherwise .*mixture of experts.*all alike"):
        model_shape(experts, num_labels=2)


def test_a_decoder_transformers_builds_no_classifier_for_is_searched_on_generation_and_told_so_on_classification(tmp_path):
    """Granite, built like Llama, has a causal LM and no sequence-classification head in transformers."""
    import torch
    from transformers import AutoModelForCausalLM, GraniteConfig

    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(GraniteConfig(vocab_size=1000, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                                                   **ATTENTION)).save_pretrained(tmp_path)
    assert model_shape(str(tmp_path), num_labels=0).family.name == "llama"
    with pytest.raises(ModelNotFound, match="^transformers builds no classifier of model type 'granite': search it on a "
                                            r"generation task \(task.type\), or choose another model$"):
        model_shape(str(tmp_path), num_labels=2)


def test_an_encoder_decoder_is_refused_before_anything_runs_not_taken_for_a_decoder(tmp_path, tmp_path_factory,
                                                                                    reviews_csv, capsys):
    """BART's decoder stack (``model.decoder.layers``, q/k/v/out_proj, fc1, fc2) is built like OPT's; taken for OPT,
    its trials adapted the decoder alone and every one failed as BART's classifier asks for an end-of-sequence token."""
    from transformers import BartConfig

    from autopeft.cli import main
    from conftest import write_job

    bart = tiny_model(tmp_path_factory, "tiny-bart", BartConfig(
        vocab_size=30522, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128))
    for num_labels in (2, 0):  # a classifier, and the causal LM of a generation task
        with pytest.raises(ModelNotFound, match="'bart' is an encoder-decoder .*supported families: bert .*opt "):
            model_shape(bart, num_labels=num_labels)
    job = write_job(tmp_path, model=bart, task={"train_file": str(reviews_csv), "text_columns": ["review"],
                                                "label_column": "sentiment"})
    assert main(["submit", str(job)]) == 2
    error = capsys.readouterr().err
    assert "model: model type 'bart' is an encoder-decoder" in error and "Fix: choose a model of one of these types" in error
    assert not (tmp_path / "run").exists()


def test_prefix_tuning_is_refused_for_a_model_built_like_bert_whose_attention_takes_no_key_value_cache(tmp_path_factory,
                                                                                                       tiny_bert):
    """RoFormer (as Longformer, LayoutLM, Megatron-BERT...) is recognised as a BERT by its layers, but its
    self-attention computes keys and values without a cache: every plan with a prefix failed in training."""
    from transformers import RoFormerConfig

    from autopeft.run.prepare import baseline_plans

    roformer = tiny_model(tmp_path_factory, "tiny-roformer", RoFormerConfig(
        vocab_size=30522, hidden_size=32, embedding_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64))
    shape = model_shape(roformer, num_labels=2)
    assert shape.family.name == "bert" and "self_attention" not in shape.family.blocks
    assert "self_attention" in model_shape(tiny_bert, num_labels=2).family.blocks
    with pytest.raises(UserError, match=r"prefix modules do not fit bert models \('roformer'\): prefix: it needs the "
                                        r"self-attention module"):
        load_space("mixed", shape)
    with pytest.raises(UserError, match="'prefix-10' does not fit bert models"):
        baseline_plans(["prefix-10"], shape)
    assert set(baseline_plans(["lora-r8", "houlsby", "prompt-20"], shape)) == {"lora-r8", "houlsby", "prompt-20"}
    check_counts(roformer, "catalogue", 6)


def test_ln_tuning_is_refused_for_a_model_whose_norms_have_no_weights(tmp_path_factory, tmp_path):
    """OLMo is built like Llama, but its LayerNorms have no scale or bias: LN tuning would train nothing."""
    from transformers import OlmoConfig

    from autopeft.run.prepare import baseline_plans

    olmo = tiny_model(tmp_path_factory, "tiny-olmo", OlmoConfig(vocab_size=30522, hidden_size=64, intermediate_size=96,
                                                                 num_hidden_layers=2, pad_token_id=0, **ATTENTION))
    shape = model_shape(olmo, num_labels=2)
    assert shape.family.name == "llama" and shape.norms == {}
    with pytest.raises(UserError, match="'ln-tuning' does not fit llama models"):
        baseline_plans(["ln-tuning"], shape)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"name": "norms", "modules": {"ln_tuning": {}, "lora": {"groups": {"query": [0, 4]}}}}))
    with pytest.raises(UserError, match="modules.ln_tuning: the normalisation modules of olmo models have no weights"):
        load_space(str(space), shape)
    assert baseline_plans(["lora-r8", "ia3"], shape)  # the rest fits


@pytest.fixture(scope="module")
def tiny_llama_without_pad(tmp_path_factory, reviews_csv) -> str:
    """A 2-layer Llama classifier with a decoder's tokenizer: an end-of-sequence token and no padding token."""
    from transformers import LlamaConfig

    return tiny_decoder(tmp_path_factory, "tiny-llama-classifier", reviews_csv, LlamaConfig, classifier=True)


def test_a_classification_search_on_a_decoder_pads_with_its_eos_token(tmp_path, tiny_llama_without_pad, reviews_csv,
                                                                     ray_local):
    from conftest import three_trial_search

    three_trial_search(tmp_path, tiny_llama_without_pad, reviews_csv, "lora", ["lora-r8", "ia3"])


def test_a_decoder_published_in_bf16_trains_in_fp32_as_the_same_weights_stored_in_fp32(tmp_path, tiny_llama_without_pad,
                                                                                        reviews_csv):
    """Most decoders are published in bf16, and transformers loads a checkpoint in its own dtype: the base, its
    new classification head and a trial's training are fp32 all the same, as the memory estimate counts them."""
    import shutil

    import torch
    from transformers import AutoModelForSequenceClassification

    from autopeft.job.data import load_task_data
    from autopeft.job.spec import TaskSpec
    from autopeft.workers.methods import baseline_plan
    from autopeft.workers.models import load_base
    from autopeft.workers.trial import run_trial
    from autopeft.workers.types import Fidelity, TrialRequest

    model = AutoModelForSequenceClassification.from_pretrained(tiny_llama_without_pad).to(torch.bfloat16)
    stored = {}
    for dtype in (torch.bfloat16, torch.float32):
        folder = tmp_path / str(dtype).split(".")[1]
        shutil.copytree(tiny_llama_without_pad, folder)
        model.to(dtype).save_pretrained(folder)  # the same bf16 values, widened exactly for the fp32 copy
        stored[dtype] = str(folder)
    _, base = load_base(stored[torch.bfloat16], 2)
    assert {p.dtype for p in base.parameters()} == {torch.float32}
    data = load_task_data(TaskSpec(train_file=reviews_csv, text_columns=["review"], label_column="sentiment"))
    shape = model_shape(stored[torch.float32], 2)
    fidelity = Fidelity(train_examples=48, eval_examples=64, batch_size=16, max_seq_length=32)
    results = [run_trial(TrialRequest(0, baseline_plan("lora-r8", shape), stored[dtype], 2, "accuracy", fidelity, seed=1), data)
               for dtype in stored]
    assert results[0].metrics["train_loss"] == results[1].metrics["train_loss"]
    assert results[0].quality == results[1].quality


@pytest.mark.parametrize("model_type", ["gpt_neox", "opt"])
def test_a_search_on_a_decoder_with_a_fused_or_an_unwrapped_ffn_exports_a_point_that_reloads_with_its_quality(
        model_type, tmp_path, tmp_path_factory, reviews_csv, ray_local):
    """GPT-NeoX: fused query-key-value and attention beside the MLP; OPT: an FFN no adapter can wrap."""
    import json

    import transformers
    from transformers import AutoTokenizer

    import autopeft
    from autopeft.api import export
    from conftest import base_model, three_trial_search
    from test_export import _validation_accuracy

    path = tiny_model(tmp_path_factory, f"tiny-{model_type}-search", DECODERS[model_type](transformers))
    shape = model_shape(path, num_labels=2)
    baselines = ["ia3", "prefix-10"] + (["houlsby"] if model_type == "gpt_neox" else [])
    job = three_trial_search(tmp_path, path, reviews_csv, _space(tmp_path, shape), baselines)
    export(job, "best", tmp_path / "out")
    info = json.loads((tmp_path / "out" / "autopeft_point.json").read_text())
    base = base_model(path, num_labels=2)
    base.config.pad_token_id = AutoTokenizer.from_pretrained(path).pad_token_id
    accuracy = _validation_accuracy(autopeft.load_adapter(base, tmp_path / "out"), job, path)
    assert accuracy == pytest.approx(info["quality"], abs=1.5 / job.fidelity.eval_examples)


@pytest.mark.integration
def test_smollm2_is_a_built_in_llama_whose_counts_match_peft():
    shape = model_shape("smollm2-135m", num_labels=3)
    assert (shape.family.name, shape.num_layers, shape.hidden_size) == ("llama", 30, 576)
    assert shape.group_dims["key"] == (576, 192) and shape.base_params == 134_515_008 + 576 * 3
    check_counts("smollm2-135m", "lora", 3)


@pytest.mark.integration
def test_a_gguf_model_is_dequantised_once_into_a_cache_folder_that_loads_the_same_model():
    import os
    from pathlib import Path

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from autopeft.workers.models import pretrained, resolve_model

    gguf = resolve_model("smollm2-135m")
    folder, extra = pretrained("smollm2-135m")
    assert extra == {} and Path(folder).parent == Path(os.environ["AUTOPEFT_CACHE"]) / "dequantised"
    written = (Path(folder) / "model.safetensors").stat().st_mtime_ns
    assert pretrained("smollm2-135m") == (folder, {}) and (Path(folder) / "model.safetensors").stat().st_mtime_ns == written
    # nothing half-written left behind by this process (another test process may be writing its own now)
    assert not [p for p in Path(folder).parent.iterdir() if p.name.startswith(f".partial-{os.getpid()}-")]
    source = {"pretrained_model_name_or_path": os.path.dirname(gguf), "gguf_file": os.path.basename(gguf)}
    direct, cached = AutoModelForCausalLM.from_pretrained(**source).state_dict(), AutoModelForCausalLM.from_pretrained(folder).state_dict()
    assert direct.keys() == cached.keys() and all(torch.equal(direct[k], cached[k]) for k in direct)
    tokenizers = AutoTokenizer.from_pretrained(**source), AutoTokenizer.from_pretrained(folder)
    chat = [{"role": "user", "content": "Fresh or rotten? A sly, Ünïcode-laden delight."}]
    rendered = [t.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) for t in tokenizers]
    assert rendered[0] == rendered[1] and tokenizers[0](rendered[0]).input_ids == tokenizers[1](rendered[1]).input_ids


def test_a_gguf_model_is_read_directly_where_the_cache_cannot_be_written(tmp_path, monkeypatch):
    import os

    from autopeft.workers.models import pretrained, resolve_model

    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("AUTOPEFT_CACHE", str(tmp_path / "not-a-folder"))
    gguf = resolve_model("smollm2-135m")
    assert pretrained("smollm2-135m") == (os.path.dirname(gguf), {"gguf_file": os.path.basename(gguf)})


@pytest.mark.integration
def test_a_classification_search_on_smollm2(tmp_path, ray_local):
    from autopeft.api import submit
    from autopeft.job.load import load_job
    from conftest import write_job

    job = load_job(write_job(
        tmp_path, model="smollm2-135m", search_space="lora", baselines=["lora-r8"],
        fidelity={"train_examples": 16, "eval_examples": 16, "batch_size": 8, "max_seq_length": 32, "learning_rate": 0.002},
        budget={"trials": 2, "parallel": 2}, optimizer={"sampler": "random"},
    ))
    summary = submit(job, progress=False)
    assert summary.finished == 2 and summary.failed == 0
    assert summary.baselines["lora-r8"].params == 460_800 + 576 * 2


POSITIONED = {  # learned absolute positions, 40 of them to use: RoBERTa's ids start after its padding index
    "bert": lambda t: t.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=64, max_position_embeddings=40),
    "roberta": lambda t: t.RobertaConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=64, max_position_embeddings=42, pad_token_id=1),
    "gpt2": lambda t: t.GPT2Config(vocab_size=30522, n_embd=32, n_layer=1, n_head=2, n_positions=40),
    "opt": lambda t: t.OPTConfig(vocab_size=30522, hidden_size=32, ffn_dim=64, num_hidden_layers=1, num_attention_heads=2,
                                 word_embed_proj_dim=32, max_position_embeddings=40),
}


@pytest.mark.parametrize("name", sorted(POSITIONED))
def test_the_longest_input_a_model_takes_is_what_its_position_embeddings_hold(name, tmp_path_factory):
    """The shape's ``max_tokens`` inputs run; one token more fails in the model, which is why a job whose
    ``fidelity.max_seq_length`` exceeds it is refused before any trial (tests/test_bad_input.py)."""
    import torch
    import transformers

    from conftest import base_model

    path = tiny_model(tmp_path_factory, f"positions-{name}", POSITIONED[name](transformers))
    shape = model_shape(path, num_labels=2)
    assert shape.max_tokens == 40
    model = base_model(path, 2).eval()
    with torch.no_grad():
        assert model(input_ids=torch.full((1, 40), 7)).logits.shape == (1, 2)
        with pytest.raises((IndexError, RuntimeError)):
            model(input_ids=torch.full((1, 41), 7))


def test_models_without_absolute_positions_bound_no_input(tmp_path_factory, tiny_deberta):
    """BLOOM's ALiBi and DeBERTa-v3's relative attention: no bound (``max_tokens`` 0), and a long input runs."""
    import torch
    import transformers

    from conftest import base_model

    bloom = tiny_model(tmp_path_factory, "positions-bloom", transformers.BloomConfig(vocab_size=30522, hidden_size=32,
                                                                                       n_layer=1, n_head=2))
    for path in (bloom, tiny_deberta):
        assert model_shape(path, num_labels=2).max_tokens == 0
        with torch.no_grad():
            assert base_model(path, 2).eval()(input_ids=torch.full((1, 700), 7)).logits.shape == (1, 2)


def test_a_tokenizer_saved_padding_on_the_left_pads_on_the_right(tmp_path_factory):
    """Tokenizers of chat models are often saved padding on the left, for generation. A classifier's batch is padded
    by the tokenizer: on the left, GPT-2's learned positions would move a short example's tokens, and a batch
    would score it otherwise than alone; padded on the right (as the prefix method is tested), it scores the same."""
    import torch
    import transformers
    from transformers import AutoTokenizer

    from autopeft.workers.models import load_base

    folder = tiny_model(tmp_path_factory, "tiny-gpt2-left", DECODERS["gpt2"](transformers))
    AutoTokenizer.from_pretrained(folder, padding_side="left").save_pretrained(folder)
    assert AutoTokenizer.from_pretrained(folder).padding_side == "left"
    tokenizer, model = load_base(folder, 2)
    assert tokenizer.padding_side == "right"
    short, long = "a fine film", "a long and tedious film that never finds its story or its people"
    model.eval()
    with torch.no_grad():
        alone = model(**tokenizer.pad([tokenizer(short)], return_tensors="pt")).logits[0]
        batch = model(**tokenizer.pad([tokenizer(short), tokenizer(long)], return_tensors="pt")).logits[0]
    assert torch.allclose(batch, alone, atol=1e-5)


@pytest.mark.integration
def test_a_decoder_reads_a_text_pair_as_two_texts_a_blank_line_apart():
    """SmolLM2's tokenizer has no separator: given a pair, it reads "the cat sata dog ran". An encoder's keeps its own."""
    from types import SimpleNamespace

    from autopeft.workers.models import load_tokenizer
    from autopeft.workers.train import Classification
    from autopeft.workers.types import Fidelity, TaskData

    data = TaskData(train_texts=(("the cat sat", "a dog ran"),), train_labels=(1,), validation_texts=(),
                    validation_labels=(), label_names=("no", "yes"))
    for model, read in (("smollm2-135m", "the cat sat\n\na dog ran"), ("minilm-l6", "[CLS] the cat sat [SEP] a dog ran [SEP]")):
        tokenizer = load_tokenizer(model)
        context = SimpleNamespace(tokenizer=tokenizer, data=data, fidelity=Fidelity(max_seq_length=64))
        encoded = Classification.encode(context, "train", [0])[0]
        assert tokenizer.decode(encoded["input_ids"]) == read and encoded["labels"] == 1
        assert Classification.lengths(tokenizer, data, [0]) == [len(encoded["input_ids"])]
