"""VideoLLM end to end on tiny checkpoints: build, merge, labels, save/load, generation, loud loading."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from conftest import PROJECTOR_SPECS
from safetensors.torch import load_file, save_file
from tiny import random_frames
from transformers import AutoModel, CLIPImageProcessor, CLIPVisionModel, TextIteratorStreamer

from vllm_i2v.errors import BudgetError, CheckpointError, ConfigError, PromptError
from vllm_i2v.models import IGNORE_INDEX, VideoLLM, VideoLLMProcessor, build_video_llm
from vllm_i2v.models.preprocess import FramePreprocessor, preprocess_spec_from_processor
from vllm_i2v.models.vision import tower_inputs

ASK = [{"role": "user", "content": "<video>\nWhat is happening in the video?"}]


def ask(text: str) -> list[dict]:
    return [{"role": "user", "content": f"<video>\n{text}"}]


@pytest.mark.parametrize("projector", sorted(PROJECTOR_SPECS))
def test_save_load_round_trip_gives_identical_logits(build, projector, tmp_path):
    model, processor = build(projector)
    batch = processor([ASK], [[random_frames(4)]])
    expected = model(**batch).logits
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and not list(tmp_path.glob("*.bin"))
    loaded = VideoLLM.from_pretrained(tmp_path)
    reloaded_batch = VideoLLMProcessor.from_pretrained(tmp_path)([ASK], [[random_frames(4)]])
    torch.testing.assert_close(reloaded_batch["input_ids"], batch["input_ids"])
    torch.testing.assert_close(loaded(**reloaded_batch).logits, expected, atol=0, rtol=0)
    assert isinstance(AutoModel.from_pretrained(tmp_path), VideoLLM)  # registered with transformers' Auto classes


def test_pretrained_parts_keep_their_weights(build, parts):
    model, _ = build("stpool")
    clip = CLIPVisionModel.from_pretrained(parts["clip"])
    for name, param in clip.state_dict().items():
        torch.testing.assert_close(model.vision_tower.model.state_dict()[name], param, atol=0, rtol=0)
    assert (
        model.language_model.lm_head.weight.data_ptr() == model.language_model.get_input_embeddings().weight.data_ptr()
    )


def test_visual_tokens_land_on_the_placeholders(build):
    model, processor = build("stpool")
    frames = random_frames(3)
    batch = processor([ASK], [[frames]])
    mask = model.visual_token_mask(batch["input_ids"])
    assert int(mask.sum()) == model.config.num_visual_tokens(3) == 3 + 16
    embeds = model.embed(batch["input_ids"], batch["pixel_values"], batch["frame_counts"])
    (visual,) = model.encode_visual(batch["pixel_values"], batch["frame_counts"])
    torch.testing.assert_close(embeds[mask], visual)
    text = model.get_input_embeddings()(batch["input_ids"].masked_fill(mask, 0))
    torch.testing.assert_close(embeds[~mask], text[~mask])


def test_vision_tower_reads_the_requested_layer(build, parts):
    clip = CLIPVisionModel.from_pretrained(parts["clip"]).eval()
    pixels = FramePreprocessor(preprocess_spec_from_processor(CLIPImageProcessor.from_pretrained(parts["clip"])))(
        random_frames(2)
    )
    hidden = clip(pixel_values=pixels, output_hidden_states=True).hidden_states
    for layer, select, expected in (
        (-2, "patch", hidden[-2][:, 1:]),
        (-1, "full", hidden[-1]),
        (1, "patch", hidden[1][:, 1:]),
    ):
        model, _ = build("mlp", vision_feature_layer=layer, vision_feature_select=select)
        torch.testing.assert_close(model.vision_features(pixels), expected)
    model, _ = build("stpool", vision_feature_select="full")
    assert model.config.num_visual_tokens(2) == 2 + 17  # CLS kept


def test_vision_half_of_a_dual_encoder_checkpoint(parts):
    model, _ = build_video_llm({"vision": str(parts["clip_full"]), "llm": str(parts["llm"])})
    assert type(model.vision_tower.model).__name__ == "CLIPVisionModel"
    assert model.config.vision_grid == [4, 4] and model.config.vision_prefix_tokens == 1


def test_preprocessing_matches_transformers_image_processor(parts):
    processor = CLIPImageProcessor.from_pretrained(parts["clip"])
    frames = random_frames(3, height=50, width=70)
    ours = FramePreprocessor(preprocess_spec_from_processor(processor))(frames)
    theirs = torch.as_tensor(np.stack(processor(list(frames), return_tensors="np")["pixel_values"]))
    assert ours.shape == theirs.shape == (3, 3, 32, 32)
    assert (ours - theirs).abs().mean() < 0.02  # torch antialiased bicubic vs PIL: about one grey level


def test_read_only_frames_are_preprocessed_without_a_warning():
    """Frames read by PIL are read-only arrays: preprocessing copies them instead of sharing them (which torch
    warns about, once per process, in the middle of a training run's progress bar: hence a process of its own)."""
    code = (
        "import numpy as np; from vllm_i2v.models.preprocess import FramePreprocessor, PreprocessSpec; "
        "frames = np.zeros((2, 50, 70, 3), np.uint8); frames.flags.writeable = False; "
        "print(tuple(FramePreprocessor(PreprocessSpec(resize={'height': 32, 'width': 32}))(frames).shape))"
    )
    result = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(2, 3, 32, 32)"


def test_labels_cover_only_assistant_replies(build):
    model, processor = build("stpool")
    conversation = [
        {"role": "system", "content": "You describe videos."},
        {"role": "user", "content": "<video>\nWhat moves?"},
        {"role": "assistant", "content": "A red square moves right."},
        {"role": "user", "content": "And the circle?"},
        {"role": "assistant", "content": "It stays still."},
    ]
    batch = processor([conversation], [[random_frames(2)]], with_labels=True)
    labels, ids = batch["labels"][0], batch["input_ids"][0]
    visual = model.visual_token_mask(batch["input_ids"])[0]
    assert (labels[visual] == IGNORE_INDEX).all()
    supervised = processor.tokenizer.decode(ids[labels != IGNORE_INDEX])
    assert supervised == "A red square moves right.<|im_end|>\nIt stays still.<|im_end|>\n"
    loss = model(**batch).loss
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in model.projector.parameters())
    assert all(p.grad is None for p in model.vision_tower.parameters())  # frozen by default


def test_greedy_generation_with_and_without_kv_cache(build):
    model, processor = build("stpool")
    batch = processor([ASK], [[random_frames(4)]])
    cached = model.generate(**batch, max_new_tokens=12, do_sample=False, use_cache=True)
    uncached = model.generate(**batch, max_new_tokens=12, do_sample=False, use_cache=False)
    assert cached.shape[1] > 1
    torch.testing.assert_close(cached, uncached, atol=0, rtol=0)


def test_grouped_query_attention_reads_shared_heads_in_place_with_the_same_result(build):
    """The LLM (2 key/value heads for 4 query heads) runs on models/attention.py's sdpa_gqa: a left-padded batch's
    logits and gradients equal transformers' sdpa, which copies the shared heads."""
    model, processor = build("stpool")
    llm = model.language_model
    assert llm.config._attn_implementation == "sdpa_gqa" and llm.config.num_key_value_heads < 4
    batch = processor([ask("What?"), ask("Which way does it move, and how many are there?")], [[random_frames(2)]] * 2)
    assert (batch["attention_mask"] == 0).any()  # a mask: the path that differs

    def run(implementation):
        llm.set_attn_implementation(implementation)
        model.zero_grad()
        logits = model(**batch).logits
        logits.float().pow(2).mean().backward()
        return logits.detach(), llm.model.layers[0].self_attn.k_proj.weight.grad.clone()

    try:
        (ours, our_grad), (theirs, their_grad) = run("sdpa_gqa"), run("sdpa")
    finally:
        llm.set_attn_implementation("sdpa_gqa")
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(our_grad, their_grad, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("projector", ["stpool", "qformer"])
def test_batched_generation_matches_single(build, projector):
    model, processor = build(projector)
    conversations = [ask("What?"), ask("Describe the clip in detail, which direction does it move and how many?")]
    visuals = [[random_frames(2, seed=1)], [random_frames(5, seed=2)]]
    batch = processor(conversations, visuals)
    assert (batch["attention_mask"][0] == 0).any() and batch["attention_mask"][0, -1] == 1  # left padded
    together = model.generate(**batch, max_new_tokens=8, do_sample=False, pad_token_id=processor.tokenizer.pad_token_id)
    for i in range(2):
        alone = model.generate(**processor([conversations[i]], [visuals[i]]), max_new_tokens=8, do_sample=False)
        torch.testing.assert_close(together[i : i + 1, : alone.shape[1]], alone, atol=0, rtol=0)


def test_shared_prefix_generation_matches_one_by_one(build):
    model, processor = build("stpool")
    questions = ["What?", "Describe the clip in detail, which direction does it move?", "How many objects are there?"]
    clips = [random_frames(3, seed=1), random_frames(3, seed=1), random_frames(4, seed=2)]  # two share a video
    rows, visual = [], []
    for question, frames in zip(questions, clips):
        rows.append(processor.expanded_ids(ask(question), [len(frames)])[0])
        visual.append(model.encode_visual(processor.frame_preprocessor(frames), [len(frames)]))
    greedy = {"max_new_tokens": 8, "do_sample": False, "pad_token_id": processor.tokenizer.pad_token_id}
    for group in ([0, 1], [0, 1, 2]):  # a prefix through the visual tokens; only the template's start
        together = model.generate_shared_prefix([rows[i] for i in group], [visual[i] for i in group], **greedy)
        for b, i in enumerate(group):
            alone = model.generate(**processor([ask(questions[i])], [[clips[i]]]), **greedy)
            assert together[b, : alone.shape[1]].tolist() == alone[0].tolist()


def test_streaming_with_text_iterator_streamer(build):
    model, processor = build("stpool")
    batch = processor([ASK], [[random_frames(2)]])
    expected = processor.tokenizer.decode(
        model.generate(**batch, max_new_tokens=10, do_sample=False)[0], skip_special_tokens=True
    )
    streamer = TextIteratorStreamer(processor.tokenizer, skip_special_tokens=True)
    thread = threading.Thread(
        target=model.generate, kwargs={**batch, "max_new_tokens": 10, "do_sample": False, "streamer": streamer}
    )
    thread.start()
    streamed = "".join(streamer)
    thread.join()
    assert streamed == expected


def test_image_and_video_and_two_videos_in_one_conversation(build):
    model, processor = build("stpool")
    conversation = [{"role": "user", "content": "<image> then <video> and <video>: what changed?"}]
    image, clip_a, clip_b = random_frames(1)[0], random_frames(3, seed=1), random_frames(5, seed=2)
    batch = processor([conversation], [[image, clip_a, clip_b]])
    assert batch["frame_counts"].tolist() == [1, 3, 5]
    slots = int(model.visual_token_mask(batch["input_ids"]).sum())
    assert slots == sum(model.config.num_visual_tokens(t) for t in (1, 3, 5))
    assert model(**batch).logits.shape[1] == batch["input_ids"].shape[1]


def test_placeholder_count_mismatch_is_an_error(build):
    _, processor = build("stpool")
    with pytest.raises(PromptError, match="1 placeholders \\(video\\) but 2 visual inputs"):
        processor([ASK], [[random_frames(2), random_frames(2)]])
    with pytest.raises(PromptError, match="0 placeholders \\(none\\) but 1 visual inputs"):
        processor([[{"role": "user", "content": "no placeholder"}]], [[random_frames(2)]])
    with pytest.raises(PromptError, match="<image> placeholder got 3 frames"):
        processor([[{"role": "user", "content": "<image> what?"}]], [[random_frames(3)]])


def test_merge_refuses_a_token_count_mismatch(build):
    model, processor = build("stpool")
    batch = processor([ASK], [[random_frames(2)]])
    with pytest.raises(PromptError, match="visual-token slots"):
        model.merge(batch["input_ids"], [torch.zeros(3, model.config.text_config.hidden_size)])


def test_fallback_chat_template(parts):
    model, processor = build_video_llm({"vision": str(parts["clip"]), "llm": str(parts["llm_no_template"])})
    text = processor.render(ASK + [{"role": "assistant", "content": "Nothing."}], add_generation_prompt=False)
    assert text == "User: <video>\nWhat is happening in the video?\nAssistant: Nothing.<|im_end|>\n"
    batch = processor([ASK + [{"role": "assistant", "content": "Nothing."}]], [[random_frames(2)]], with_labels=True)
    supervised = batch["labels"][0][batch["labels"][0] != IGNORE_INDEX]
    assert processor.tokenizer.decode(supervised) == " Nothing.<|im_end|>\n"


def test_frame_budget(build):
    model, processor = build("stpool")
    context = model.config.context_length  # 512; stpool: T + 16 tokens
    assert processor.max_frames(reserved_tokens=100) == context - 100 - 16
    with pytest.raises(BudgetError, match="exceeds the LLM's context of 512"):
        processor.max_frames(reserved_tokens=500)
    _, processor_mlp = build("mlp")  # 4 tokens per frame
    with pytest.raises(BudgetError, match="needs \\d+ tokens .* context is 512"):
        processor_mlp([ASK], [[random_frames(200)]])


@pytest.mark.parametrize("lora", [{"r": 4}, {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}])
def test_vision_lora_trains_only_adapters_and_round_trips(build, tmp_path, lora):
    model, processor = build("stpool", vision_lora=lora)
    trainable = [n for n, p in model.vision_tower.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert not any("layers.2." in n for n in trainable)  # the block past the feature layer (-2 of 3) gets none
    with torch.no_grad():  # LoRA B starts at zero; make the adapters matter for the round trip
        for name, param in model.vision_tower.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    batch = processor([ASK], [[random_frames(2)]])
    model.train()
    model(**batch).logits.square().mean().backward()
    assert all(
        p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.vision_tower.named_parameters() if "lora_" in n
    )
    model.eval()
    expected = model(**batch).logits
    model.save_pretrained(tmp_path)
    torch.testing.assert_close(VideoLLM.from_pretrained(tmp_path)(**batch).logits, expected, atol=0, rtol=0)


def test_a_trained_checkpoint_loads_ready_to_answer(saved_model, tmp_path):
    """A trainable-only checkpoint whose LoRA trained with dropout loads in eval mode, as a full one does: its
    adapters' dropout must not reach the chat's or the server's answers."""
    from vllm_i2v.models.checkpoint import load_model, save_trainable
    from vllm_i2v.models.lora import add_lora

    model = load_model(saved_model)
    model.config.llm_lora = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.5, "target_modules": "all-linear"}
    add_lora(model.language_model, model.config.llm_lora)
    loaded = load_model(save_trainable(model, tmp_path / "trained", saved_model))
    assert any("lora_dropout" in name for name, _ in loaded.named_modules())
    assert [name for name, module in loaded.named_modules() if module.training] == []


def test_checkpoint_missing_a_projector_weight_refuses_to_load(saved_model, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in saved_model.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    weights = load_file(broken / "model.safetensors")
    del weights["projector.mlp.2.weight"]
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="missing.*projector.mlp.2.weight"):
        VideoLLM.from_pretrained(broken)


def test_checkpoint_with_extra_or_misshapen_weights_refuses_to_load(saved_model, tmp_path):
    for name, change in (("extra", "unexpected"), ("shape", "mismatch")):
        broken = tmp_path / name
        broken.mkdir()
        for f in saved_model.iterdir():
            (broken / f.name).write_bytes(f.read_bytes())
        weights = load_file(broken / "model.safetensors")
        if change == "unexpected":
            weights["projector.extra.weight"] = torch.zeros(2)
        else:
            weights["projector.mlp.0.weight"] = torch.zeros(3, 3)
        save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
        with pytest.raises(
            CheckpointError, match="projector.extra.weight" if change == "unexpected" else "projector.mlp.0.weight"
        ):
            VideoLLM.from_pretrained(broken)


def test_config_naming_an_unknown_projector(saved_model, tmp_path):
    config = json.loads((saved_model / "config.json").read_text())
    config["projector"] = {"type": "resampler"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").symlink_to(saved_model / "model.safetensors")
    with pytest.raises(
        ConfigError, match="unknown projector 'resampler'; known projectors: stpool, adapool, qformer, mlp"
    ):
        VideoLLM.from_pretrained(tmp_path)


def test_build_refuses_an_incomplete_vision_checkpoint(parts, tmp_path):
    broken = tmp_path / "clip"
    broken.mkdir()
    for f in parts["clip"].iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    weights = load_file(broken / "model.safetensors")
    name = next(k for k in weights if "layers.1.mlp.fc1.weight" in k)
    del weights[name]
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="vision tower weights do not all load.*layers.1.mlp.fc1.weight"):
        build_video_llm({"vision": str(broken), "llm": str(parts["llm"])})


def _save_tower(path, model, processor):
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return str(path)


@pytest.mark.parametrize("kind", ["siglip", "siglip2", "dinov2", "dinov2_registers"])
def test_other_vision_towers(kind, parts, tmp_path):
    from transformers import (
        BitImageProcessor,
        Dinov2Config,
        Dinov2Model,
        Dinov2WithRegistersConfig,
        Dinov2WithRegistersModel,
        Siglip2ImageProcessor,
        Siglip2VisionConfig,
        Siglip2VisionModel,
        SiglipImageProcessor,
        SiglipVisionConfig,
        SiglipVisionModel,
    )

    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, patch_size=8)
    if kind == "siglip":
        tower = SiglipVisionModel(SiglipVisionConfig(image_size=32, **small))
        processor = SiglipImageProcessor(size={"height": 32, "width": 32})
        expected_prefix = 0
    elif kind == "siglip2":  # NaFlex: patches in, every frame on the square grid within max_num_patches
        tower = Siglip2VisionModel(Siglip2VisionConfig(num_patches=16, **small))
        processor = Siglip2ImageProcessor(patch_size=8, max_num_patches=20)
        expected_prefix = 0
    else:  # DINOv2 checkpoints declare image_size 518, used at the processor's crop size (position interpolation)
        config_class, model_class = (
            (Dinov2Config, Dinov2Model) if kind == "dinov2" else (Dinov2WithRegistersConfig, Dinov2WithRegistersModel)
        )
        tower = model_class(config_class(image_size=64, **small))
        processor = BitImageProcessor(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32})
        expected_prefix = 1 if kind == "dinov2" else 1 + tower.config.num_register_tokens
    path = _save_tower(tmp_path / kind, tower, processor)
    model, proc = build_video_llm(
        {"vision": path, "llm": str(parts["llm"]), "projector": {"type": "mlp", "pool_stride": 2}}
    )
    assert model.config.vision_grid == [4, 4] and model.config.vision_prefix_tokens == expected_prefix
    batch = proc([ASK], [[random_frames(3)]])
    features = model.vision_features(batch["pixel_values"])
    assert features.shape == (3, 16, 32)  # prefix dropped
    hidden = tower.eval()(**tower_inputs(tower, batch["pixel_values"]), output_hidden_states=True).hidden_states
    torch.testing.assert_close(features, hidden[-2][:, expected_prefix:])  # the penultimate layer, as LLaVA reads
    assert model(**batch).logits.shape[1] == batch["input_ids"].shape[1]


def test_siglip2_patches_match_transformers_processor():
    from transformers import Siglip2ImageProcessor, Siglip2VisionConfig, Siglip2VisionModel

    from vllm_i2v.models.vision import tower_inputs

    torch.manual_seed(0)
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, patch_size=8)
    tower = Siglip2VisionModel(Siglip2VisionConfig(num_patches=16, **small)).eval()
    processor = Siglip2ImageProcessor(patch_size=8, max_num_patches=16)
    frames = random_frames(2, height=32, width=32)  # square: NaFlex keeps the 4x4 grid, so both paths agree
    theirs = processor(list(frames), return_tensors="pt")
    ours = tower_inputs(tower, FramePreprocessor(preprocess_spec_from_processor(processor))(frames))
    assert ours["spatial_shapes"].tolist() == theirs["spatial_shapes"].tolist() == [[4, 4], [4, 4]]
    torch.testing.assert_close(ours["pixel_values"], theirs["pixel_values"], atol=0.02, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(
            tower(**ours).last_hidden_state,
            tower(
                **{k: theirs[k] for k in ("pixel_values", "pixel_attention_mask", "spatial_shapes")}
            ).last_hidden_state,
            atol=0.05,
            rtol=0,
        )


def test_multimodal_content_lists_are_placeholders(build):
    _, processor = build("stpool")
    as_list = [
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What is happening in the video?"}]}
    ]
    as_text = [{"role": "user", "content": "<video>\nWhat is happening in the video?"}]  # parts join with a newline
    assert processor.render(as_list, True) == processor.render(as_text, True)
    with pytest.raises(PromptError, match="unknown message content part"):
        processor.render([{"role": "user", "content": [{"type": "audio"}]}], True)
