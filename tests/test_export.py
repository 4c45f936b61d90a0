"""`vllm-i2v export --to llava-next-video`: transformers' own class loads the export and answers as the original
(first-step logits within 1e-4 in float32, identical greedy answers on the same frames); `convert --from
llava-next-video` of the export gives the original weights back exactly; what does not fit is refused in one line."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from tiny import random_frames
from transformers import LlavaNextVideoForConditionalGeneration

from vllm_i2v.cli import main
from vllm_i2v.models import VideoLLM, VideoLLMProcessor
from vllm_i2v.models.lora import add_lora, merge_lora


@pytest.fixture(scope="module")
def trained(build, tmp_path_factory):
    """A tiny model with the mlp projector pooling 2x2 and LoRA on its LLM (B non-zero, so merging matters)."""
    model, processor = build("mlp")
    model.config.llm_lora = {"r": 4, "lora_alpha": 8, "target_modules": "all-linear"}
    add_lora(model.language_model, model.config.llm_lora)
    torch.manual_seed(1)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            param.data.normal_(std=0.05)
    out = tmp_path_factory.mktemp("trained") / "model"
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def test_transformers_loads_the_export_and_answers_the_same(trained, tmp_path):
    assert main(["export", "--to", "llava-next-video", str(trained), str(tmp_path / "lnv")]) == 0
    ours, processor = VideoLLM.from_pretrained(trained).eval(), VideoLLMProcessor.from_pretrained(trained)
    merge_lora(ours.language_model)
    peer = LlavaNextVideoForConditionalGeneration.from_pretrained(tmp_path / "lnv").eval()

    frames = random_frames(4, 32, 32)
    batch = processor([[{"role": "user", "content": "<video>\nWhat moves in the clip?"}]], [[frames]])
    inputs = {
        "input_ids": batch["input_ids"],
        "attention_mask": batch["attention_mask"],
        "pixel_values_videos": batch["pixel_values"].unsqueeze(0),
    }
    with torch.no_grad():
        mine = ours(**batch).logits
        theirs = peer(**inputs).logits[..., : mine.shape[-1]]  # rows added for the placeholders are never generated
    assert (mine - theirs).abs().max() < 1e-4 and theirs.abs().max() > 1.0
    greedy = {"max_new_tokens": 12, "do_sample": False}
    expected = peer.generate(**inputs, **greedy)[:, batch["input_ids"].shape[1] :]
    assert ours.generate(**batch, **greedy).tolist() == expected.tolist()
    # the export's tokenizer renders transformers' multimodal list content as our processor renders text
    parts = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What moves in the clip?"}]}]
    from transformers import AutoTokenizer

    exported = AutoTokenizer.from_pretrained(tmp_path / "lnv")
    rendered = exported.apply_chat_template(parts, tokenize=False, add_generation_prompt=True)
    assert rendered == processor.render([{"role": "user", "content": "<video>\nWhat moves in the clip?"}], True)


def test_converting_the_export_back_gives_the_original_weights(trained, tmp_path):
    assert main(["export", "--to", "llava-next-video", str(trained), str(tmp_path / "lnv")]) == 0
    assert main(["convert", "--from", "llava-next-video", str(tmp_path / "lnv"), str(tmp_path / "back")]) == 0
    original = VideoLLM.from_pretrained(trained).eval()
    merge_lora(original.language_model)
    original.config.llm_lora = None
    back = load_file(tmp_path / "back" / "model.safetensors")
    for name, weight in original.state_dict().items():
        if name in back:
            rows = min(weight.shape[0], back[name].shape[0]) if weight.ndim else None
            assert torch.equal(back[name][:rows], weight[:rows]), name
    assert VideoLLM.from_pretrained(tmp_path / "back").config.projector["pool_stride"] == 2


@pytest.mark.parametrize(
    "projector, reason",
    [("adapool", "its projector is adapool"), ("qformer", "its projector is qformer")],
)
def test_what_does_not_fit_is_refused_in_one_line(build, tmp_path, capsys, projector, reason):
    model, processor = build(projector)
    model.save_pretrained(tmp_path / "m")
    processor.save_pretrained(tmp_path / "m")
    assert main(["export", "--to", "llava-next-video", str(tmp_path / "m"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"cannot be exported to llava-next-video: {reason}" in err
    assert not (tmp_path / "out").exists()
