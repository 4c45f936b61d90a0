"""`vllm-i2v convert`: tiny random LLaVA / LLaVA-NeXT-Video / Video-LLaVA checkpoints, built with transformers'
own classes and saved like released ones, converted; logits and greedy answers must equal transformers'."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny import VISION, make_tokenizer, random_frames
from transformers import (
    CLIPImageProcessor,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaNextVideoConfig,
    LlavaNextVideoForConditionalGeneration,
    VideoLlavaConfig,
    VideoLlavaForConditionalGeneration,
)

from vllm_i2v.cli import main
from vllm_i2v.models import VideoLLM, VideoLLMProcessor

# A Vicuna-style template in transformers' multimodal list form, as llava-hf processors ship theirs.
LIST_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' ' }}{% endfor %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
# LLaVA-1.5's: images only (an image LLM has no video parts).
IMAGE_ONLY_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' ' }}{% endfor %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
PEERS = {
    "llava": (LlavaConfig, LlavaForConditionalGeneration, ["<image>"]),
    "llava-next-video": (LlavaNextVideoConfig, LlavaNextVideoForConditionalGeneration, ["<image>", "<video>"]),
    "video-llava": (VideoLlavaConfig, VideoLlavaForConditionalGeneration, ["<image>", "<video>"]),
}


def save_peer(path, family: str, seed: int = 0):
    """A tiny random checkpoint of ``family`` in transformers' layout, with tokenizer, processor config and template."""
    config_class, model_class, placeholders = PEERS[family]
    tokenizer = make_tokenizer(chat_template=None)
    tokenizer.add_tokens(placeholders, special_tokens=True)
    ids = {f"{name.strip('<>')}_token_id": tokenizer.convert_tokens_to_ids(name) for name in placeholders}
    text = dict(
        model_type="llama",
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        initializer_range=0.2,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = config_class(vision_config={"model_type": "clip_vision_model", **VISION}, text_config=text, **ids)
    torch.manual_seed(seed)
    model_class(config).eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    template = IMAGE_ONLY_TEMPLATE if family == "llava" else LIST_TEMPLATE
    (path / "chat_template.json").write_text(json.dumps({"chat_template": template}))
    return path


def old_hub_layout(src, dst):
    """The same checkpoint with the key layout of the released hub checkpoints (``vision_tower.vision_model.*``)."""
    dst.mkdir()
    for item in src.iterdir():
        if item.name != "model.safetensors":
            (dst / item.name).write_bytes(item.read_bytes())
    towers = ("vision_tower.", "video_tower.", "image_tower.")
    weights = {
        next((t + "vision_model." + k[len(t) :] for t in towers if k.startswith(t)), k): v
        for k, v in load_file(src / "model.safetensors").items()
    }
    assert any(".vision_model." in k for k in weights)
    save_file(weights, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def peer_inputs(family: str, batch: dict) -> dict:
    pixels = batch["pixel_values"]
    visual = {"pixel_values": pixels} if family == "llava" else {"pixel_values_videos": pixels.unsqueeze(0)}
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], **visual}


@pytest.mark.parametrize("family", sorted(PEERS))
def test_converted_model_matches_transformers(family, tmp_path):
    src = save_peer(tmp_path / "src", family)
    assert main(["convert", "--from", family, str(src), str(tmp_path / "ours")]) == 0
    ours, processor = (
        VideoLLM.from_pretrained(tmp_path / "ours").eval(),
        VideoLLMProcessor.from_pretrained(tmp_path / "ours"),
    )
    peer = PEERS[family][1].from_pretrained(src).eval()

    frames = random_frames(1 if family == "llava" else 4, 32, 32)
    placeholder = "<image>" if family == "llava" else "<video>"
    messages = [{"role": "user", "content": f"{placeholder}\nWhat moves in the clip?"}]
    parts = [
        {
            "role": "user",
            "content": [{"type": placeholder.strip("<>")}, {"type": "text", "text": "What moves in the clip?"}],
        }
    ]
    assert processor.render(messages, True) == processor.tokenizer.apply_chat_template(
        parts, tokenize=False, add_generation_prompt=True
    )
    batch = processor([messages], [[frames[0] if family == "llava" else frames]])
    tokens_per_frame = {"llava": 16, "llava-next-video": 4, "video-llava": 17}[family]  # 4x4 grid; pooled 2x2; + CLS
    assert int(ours.visual_token_mask(batch["input_ids"]).sum()) == tokens_per_frame * len(frames)

    with torch.no_grad():
        theirs = peer(**peer_inputs(family, batch)).logits
        mine = ours(**batch).logits[..., : theirs.shape[-1]]
    assert (mine - theirs).abs().max() < 1e-4
    assert theirs.abs().max() > 1.0  # logits of real magnitude, not a trivially small comparison
    greedy = {"max_new_tokens": 12, "do_sample": False}
    expected = peer.generate(**peer_inputs(family, batch), **greedy)[:, batch["input_ids"].shape[1] :]
    assert ours.generate(**batch, **greedy).tolist() == expected.tolist()


def test_video_llava_under_a_pooling_projector_reads_the_patch_grid(tmp_path):
    src = save_peer(tmp_path / "src", "video-llava")
    assert (
        main(
            [
                "convert",
                "--from",
                "video-llava",
                str(src),
                str(tmp_path / "ours"),
                "projector.type=adapool",
                "projector.grid=[4,2,2]",
            ]
        )
        == 0
    )
    model = VideoLLM.from_pretrained(tmp_path / "ours")
    assert model.config.vision_feature_select == "patch" and model.config.num_visual_tokens(4) == 16


def test_old_hub_key_layout_converts_to_the_same_model(tmp_path):
    src = save_peer(tmp_path / "src", "video-llava")
    assert (
        main(["convert", "--from", "video-llava", str(old_hub_layout(src, tmp_path / "old")), str(tmp_path / "ours")])
        == 0
    )
    peer = VideoLlavaForConditionalGeneration.from_pretrained(src).eval()
    ours = VideoLLM.from_pretrained(tmp_path / "ours").eval()
    torch.testing.assert_close(ours.vision_tower.model.state_dict(), peer.model.video_tower.state_dict())
    assert not torch.equal(
        peer.model.video_tower.embeddings.patch_embedding.weight,
        peer.model.image_tower.embeddings.patch_embedding.weight,
    )  # the video tower, not the image one


def test_image_llm_as_training_free_video_model(tmp_path):
    src = save_peer(tmp_path / "src", "llava")
    out = tmp_path / "pooled"
    assert (
        main(
            [
                "convert",
                "--from",
                "llava",
                str(src),
                str(out),
                "projector.type=slowfast",
                "projector.slow_frames=2",
                "projector.slow_grid=[4,4]",
                "projector.fast_grid=[2,2]",
                "num_frames=6",
            ]
        )
        == 0
    )
    model, processor = VideoLLM.from_pretrained(out).eval(), VideoLLMProcessor.from_pretrained(out)
    peer = LlavaForConditionalGeneration.from_pretrained(src)
    assert model.config.num_frames == 6 and processor.config.num_visual_tokens(6) == 2 * 16 + 6 * 4
    torch.testing.assert_close(model.projector.mlp[0].weight, peer.model.multi_modal_projector.linear_1.weight)
    messages = [{"role": "user", "content": "<video>\nWhat moves?"}]
    assert processor.render(messages, True) == "USER: <video>\nWhat moves? ASSISTANT:"  # LLaVA's layout, for a video
    batch = processor([messages], [[random_frames(6, 32, 32)]])
    video_id = processor.tokenizer.convert_tokens_to_ids("<video>")
    assert video_id >= peer.config.text_config.vocab_size  # added for the converted model...
    new = model.generate(**batch, max_new_tokens=6, do_sample=False)
    assert new.shape[1] > 0 and video_id not in new.tolist()[0]  # ...and never generated


def test_bad_sources_are_one_line_errors(tmp_path, capsys):
    src = save_peer(tmp_path / "src", "llava-next-video")
    assert main(["convert", "--from", "video-llava", str(src), str(tmp_path / "a")]) == 2
    assert "model_type 'llava_next_video' is not a video-llava checkpoint" in capsys.readouterr().err
    assert main(["convert", "--from", "llava-next-video", str(src), str(tmp_path / "b"), "projector.type=qformer"]) == 2
    assert "has new weights" in capsys.readouterr().err
    assert main(["convert", "--from", "llava", str(tmp_path), str(tmp_path / "c")]) == 2
    assert "not a transformers checkpoint (no config.json)" in capsys.readouterr().err
    assert not any((tmp_path / name).exists() for name in "abc")
    assert main(["convert", "--from", "llava-next-video", str(src), str(src)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_a_checkpoint_saved_as_transformers_saves_it_converts_and_matches_on_a_non_square_frame(tmp_path):
    """transformers 5 keeps the processor's settings in processor_config.json (no preprocessor_config.json); the frame
    is 48x64, so both sides resize (shortest edge, bicubic) and crop: the pixels and logits must agree."""
    from transformers import LlavaProcessor

    src = tmp_path / "src"
    tokenizer = make_tokenizer(chat_template=None)
    tokenizer.add_tokens(["<image>"], special_tokens=True)
    text = dict(
        model_type="llama",
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        initializer_range=0.2,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = LlavaConfig(
        vision_config={"model_type": "clip_vision_model", **VISION},
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
    )
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).eval().save_pretrained(src)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=LIST_TEMPLATE,
        patch_size=8,
        num_additional_image_tokens=1,  # the CLS token, as llava-hf's released processors count it
        vision_feature_select_strategy="default",
    ).save_pretrained(src)
    assert not (src / "preprocessor_config.json").exists() and "image_processor" in json.loads(
        (src / "processor_config.json").read_text()
    )
    assert main(["convert", "--from", "llava", str(src), str(tmp_path / "ours")]) == 0
    ours, processor = (
        VideoLLM.from_pretrained(tmp_path / "ours").eval(),
        VideoLLMProcessor.from_pretrained(tmp_path / "ours"),
    )
    peer, peer_processor = (
        LlavaForConditionalGeneration.from_pretrained(src).eval(),
        LlavaProcessor.from_pretrained(src),
    )

    frame = random_frames(1, 48, 64)[0]
    batch = processor([[{"role": "user", "content": "<image>\nWhat is shown?"}]], [[frame]])
    prompt = peer_processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is shown?"}]}],
        add_generation_prompt=True,
    )
    theirs_in = peer_processor(images=[frame], text=prompt, return_tensors="pt")
    assert theirs_in["input_ids"].tolist() == batch["input_ids"].tolist()
    assert (theirs_in["pixel_values"] - batch["pixel_values"]).abs().max() < 1e-6  # the same resize and rounding
    with torch.no_grad():
        theirs = peer(**theirs_in).logits
        mine = ours(**batch).logits[..., : theirs.shape[-1]]
    assert (mine - theirs).abs().max() < 1e-4 and theirs.abs().max() > 1.0
