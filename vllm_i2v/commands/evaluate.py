"""``vllm-i2v eval``: answer a task's questions, judge and score them; ``eval merge`` and ``eval compare``."""

from __future__ import annotations

from pathlib import Path

from .common import add_command


def register(subparsers) -> None:
    parser = add_command(
        subparsers,
        "eval",
        run,
        "evaluate a checkpoint on a task (open-ended QA, shapes), judge, report; compare runs",
        "Answer a task's questions (eval/tasks/*.yaml: ActivityNet-QA, MSVD-QA, MSRVTT-QA, TGIF-QA layouts, the "
        "offline shapes-world test) with a checkpoint, batched and resumable; score with judge-free metrics (exact "
        "match, token F1, embedding similarity) and any LLM judges (--judge MODEL at the OpenAI-compatible endpoint "
        "in $VLLM_I2V_JUDGE_BASE_URL, key in $VLLM_I2V_JUDGE_API_KEY; or --judge local:DIR); write predictions.jsonl, "
        "judgments.jsonl, metrics.json, report.md, scores.png. The shapes task writes its test split into --data "
        "(default data/shapes) when it is not there yet.\n"
        "  vllm-i2v eval TASK --shard I/N ...   predict one shard;  vllm-i2v eval merge OUT   join, judge, score\n"
        "  vllm-i2v eval compare RUN... [--out DIR]   several runs in one table (and compare.png)",
        "vllm-i2v eval shapes --model vllm_i2v/bundled/shapes-smollm2 --out outputs/eval/shapes --limit 50  "
        "# offline\n"
        "  vllm-i2v eval activitynet-qa --data /datasets/activitynet-qa --model outputs/run1/final --out "
        "outputs/eval/anet-run1 --judge gpt-4o-mini-2024-07-18 --batch-size 8",
    )
    parser.add_argument("task", help="task name (eval/tasks/NAME.yaml) or file; or `merge` / `compare`")
    parser.add_argument("runs", nargs="*", help="merge: the sharded run's folder; compare: run folders")
    parser.add_argument("--model", help="checkpoint to evaluate (full, trainable-only or bundle)")
    parser.add_argument("--endpoint", help="or an OpenAI-compatible server's base URL (a vLLM server, vllm-i2v serve)")
    parser.add_argument("--served-model", help="with --endpoint: the model name it serves")
    parser.add_argument("--api-key-env", help="with --endpoint: the environment variable holding its API key")
    parser.add_argument(
        "--media-urls",
        default="data",
        choices=["data", "file"],
        help="with --endpoint: send each "
        "video as a data: URL, or as a file:// URL (a server on this disk that allows the folder)",
    )
    parser.add_argument("--concurrency", type=int, default=4, help="with --endpoint: requests in flight")
    parser.add_argument("--out", help="run folder (compare: where compare.md and compare.png go)")
    parser.add_argument("--data", help="the dataset's folder (default: the task's `data`)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--limit", type=int, default=None, help="the first N questions only")
    parser.add_argument("--shard", default=None, help="I/N: predict every N-th question from the I-th")
    parser.add_argument("--frames", type=int, default=None, help="frames per video (default: the model's)")
    parser.add_argument(
        "--max-new-tokens", type=int, default=None, help="answer length cap (default: the task's; at most 256)"
    )
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast")
    parser.add_argument(
        "--feature-cache", default=None, help="cache a frozen tower's features here (reruns skip the tower)"
    )
    parser.add_argument(
        "--judge",
        action="append",
        default=None,
        help="LLM judge: a model name at the endpoint, or local:DIR (repeatable)",
    )
    parser.add_argument(
        "--judge-url", default=None, help="OpenAI-compatible base URL (default: $VLLM_I2V_JUDGE_BASE_URL)"
    )
    parser.add_argument("--judge-prompt", default=None, help="judge prompt version or file (default: the task's)")
    parser.add_argument("--judge-concurrency", type=int, default=4, help="judge requests in flight")
    parser.add_argument("--judge-timeout", type=float, default=60.0, help="seconds per judge request")
    parser.add_argument("--judge-retries", type=int, default=4, help="retries (exponential backoff) per judge request")
    parser.add_argument("--judge-cache", default=None, help="judgment cache file (default: the vllm_i2v cache folder)")
    parser.add_argument(
        "--sentence-encoder", default=None, help="for embedding similarity (default: all-MiniLM-L6-v2 from PyPI)"
    )


def run(args) -> None:
    from ..errors import ConfigError
    from ..eval.report import compare, headline
    from ..eval.run import (
        default_sentence_encoder,
        judge_and_score,
        merge_shards,
        parse_shard,
        predict_task,
        task_judges,
    )
    from ..eval.tasks import load_task

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
    elif args.runs or not (args.model or args.endpoint) or (args.model and args.endpoint) or not args.out:
        raise ConfigError("eval TASK needs --out and one of --model or --endpoint (and no extra arguments)")
    elif args.endpoint and not args.served_model:
        raise ConfigError("eval --endpoint needs --served-model (the model name the endpoint serves)")
    else:
        task, out = load_task(args.task), args.out
    judges = task_judges(
        task,
        args.judge or [],
        args.judge_prompt,
        args.judge_cache,
        base_url=args.judge_url,
        timeout=args.judge_timeout,
        max_retries=args.judge_retries,
        concurrency=args.judge_concurrency,
    )
    if args.task != "merge":
        shard = parse_shard(args.shard) if args.shard else None
        run_dir = predict_task(
            task,
            args.model,
            out,
            data_root=args.data,
            batch_size=args.batch_size,
            limit=args.limit,
            shard=shard,
            frames=args.frames,
            max_new_tokens=args.max_new_tokens,
            bf16=args.bf16,
            feature_cache=args.feature_cache,
            endpoint=args.endpoint
            and {
                "base_url": args.endpoint,
                "served_model": args.served_model,
                "api_key_env": args.api_key_env,
                "media": args.media_urls,
                "concurrency": args.concurrency,
            },
        )
        if shard:
            print(f"shard {args.shard} -> {run_dir}; when every shard is done: vllm-i2v eval merge {out}")
            return
    metrics = judge_and_score(out, task.metrics, judges, args.sentence_encoder or default_sentence_encoder())
    print(Path(out) / "report.md")
    for name, value in headline(metrics).items():
        print(f"  {name}: {value}")
