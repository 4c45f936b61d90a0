"""Answers from any OpenAI-compatible video model (``vllm-i2v eval TASK --endpoint URL --served-model NAME``): a vLLM
or SGLang server with Qwen2.5-VL or LLaVA-NeXT-Video, ``vllm-i2v serve``, a hosted API.

Each question goes as one chat request: the video as a ``video_url`` content part (a ``data:`` URL, or with
``media="file"`` a ``file://`` URL for a server that shares the disk and allows the folder) and the task's prompt
as text, greedy (temperature 0). Answers are appended to the same predictions file, in the same schema, as
in-process evaluation, so scoring, judging, reports, shards and resuming are the same.
"""

from __future__ import annotations

import base64
import mimetypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from tqdm.auto import tqdm

from ..data.formats import resolve_inside
from ..errors import ConfigError, VllmI2VError
from .predict import append_jsonl, read_jsonl


def endpoint_client(base_url: str, api_key_env: str | None = None, timeout: float = 300.0, retries: int = 2):
    """An ``openai`` client for ``base_url``, its key read from the environment variable ``api_key_env``."""
    import openai

    key = os.environ.get(api_key_env, "") if api_key_env else "none"
    if api_key_env and not key:
        raise ConfigError(f"${api_key_env} is empty: set it to the endpoint's API key")
    return openai.OpenAI(base_url=base_url, api_key=key, timeout=timeout, max_retries=retries)


def check_endpoint(client, served_model: str) -> None:
    """One request before any video is sent: the endpoint answers and serves ``served_model``."""
    import openai

    try:
        served = [m.id for m in client.models.list().data]
    except openai.APIError as exc:
        raise ConfigError(
            f"{client.base_url}: the endpoint did not answer /models ({type(exc).__name__}: {exc})"
        ) from None
    if served_model not in served:
        raise ConfigError(f"{client.base_url} serves {', '.join(served) or 'no model'}, not {served_model!r}")


def media_url(path: Path, media: str) -> str:
    """The video as a ``data:`` URL (its bytes, base64) or a ``file://`` URL."""
    if media == "file":
        return path.resolve().as_uri()
    kind = mimetypes.guess_type(path.name)[0] or "video/mp4"
    return f"data:{kind};base64," + base64.b64encode(path.read_bytes()).decode()


def predict_endpoint(
    client,
    served_model: str,
    rows: list[dict],
    video_root,
    out_path,
    max_new_tokens: int = 16,
    prompt: str = "{question}",
    frames: int | None = None,
    media: str = "data",
    concurrency: int = 4,
) -> dict:
    """Answer ``rows`` through the endpoint into ``out_path`` (JSONL, resumable); counts as :func:`predict` gives."""
    import openai

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    done = {str(row["question_id"]) for row in read_jsonl(out_path)}
    todo = [row for row in rows if str(row["question_id"]) not in done]
    stats = {"predicted": 0, "skipped": len(rows) - len(todo), "missing": 0, "missing_videos": []}
    extra = {"frames": frames} if frames else {}
    lock = threading.Lock()

    def answer(row: dict) -> dict:
        video = resolve_inside(Path(video_root), row["video"], f"question {row['question_id']}")
        reply = client.chat.completions.create(
            model=served_model,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "video_url", "video_url": {"url": media_url(video, media)}},
                        {"type": "text", "text": prompt.format(**row)},
                    ],
                }
            ],
            temperature=0,
            max_tokens=max_new_tokens,
            extra_body=extra or None,
        )
        return {**row, "pred": (reply.choices[0].message.content or "").strip()}

    with (
        open(out_path, "a") as out,
        ThreadPoolExecutor(concurrency) as pool,
        tqdm(total=len(todo), desc=f"answering ({served_model})", dynamic_ncols=True) as bar,
    ):
        futures = {pool.submit(answer, row): row for row in todo}
        for future in as_completed(futures):
            row = futures[future]
            try:
                result = future.result()
            except (VllmI2VError, openai.UnprocessableEntityError, openai.BadRequestError) as exc:  # this video only
                message = exc.body.get("message", str(exc)) if isinstance(getattr(exc, "body", None), dict) else exc
                with lock:
                    stats["missing"] += 1
                    stats["missing_videos"].append(f"{row['video']}: {message}")
                bar.update()
                continue
            except openai.APIError as exc:  # the endpoint itself failed: stop; a rerun resumes
                raise ConfigError(f"{client.base_url}: {type(exc).__name__}: {exc}") from None
            with lock:
                append_jsonl(out, [result])
                stats["predicted"] += 1
            bar.update()
    return stats
