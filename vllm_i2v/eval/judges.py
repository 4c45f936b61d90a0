"""LLM judges for open-ended answers: the protocol of Video-ChatGPT's quantitative evaluation (the judge reads
question, reference answer and prediction and replies with a dict: ``pred`` yes/no and ``score`` 0-5).

A judge is a chat model behind an OpenAI-compatible endpoint (the ``openai`` client: timeouts, retries with
exponential backoff on connection errors, 429 and 5xx) or a local transformers model, always at temperature 0.
Its name, which every number it produces carries, is ``<model> (<prompt version>)``; the served model snapshot
the endpoint reports is recorded beside it. Judgments are cached (SQLite) by judge model, prompt version,
question, answer and prediction, so re-judging the same predictions costs nothing and returns the same verdicts.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from ..cache import cache_dir
from ..errors import ConfigError, VllmI2VError
from .files import load_named_yaml

ENV_BASE_URL, ENV_API_KEY = "VLLM_I2V_JUDGE_BASE_URL", "VLLM_I2V_JUDGE_API_KEY"


@dataclass(frozen=True)
class JudgePrompt:
    """A versioned judge prompt (``eval/prompts/<version>.yaml``): ``version``, ``system``, ``user`` (with
    ``{question}``, ``{answer}``, ``{pred}``; a ``pairs`` prompt also ``{question2}``, ``{pred2}``: two answers of
    one video judged together, as the consistency axis does), ``reply``: ``verdict`` (yes/no + score) or
    ``score`` (a 0-5 score only)."""

    version: str
    system: str
    user: str
    reply: str = "verdict"
    pairs: bool = False

    @classmethod
    def load(cls, name_or_path: str) -> JudgePrompt:
        path, raw = load_named_yaml(name_or_path, "prompts", {"version", "system", "user"})
        if raw.get("reply", "verdict") not in ("verdict", "score"):
            raise ConfigError(f"{path}: reply must be 'verdict' or 'score', got {raw['reply']!r}")
        return cls(
            str(raw["version"]),
            raw["system"].strip(),
            raw["user"].strip(),
            raw.get("reply", "verdict"),
            bool(raw.get("pairs", False)),
        )

    def messages(self, fields: dict) -> list[dict]:
        return [{"role": "system", "content": self.system}, {"role": "user", "content": self.user.format(**fields)}]

    def parse(self, reply: str) -> dict | None:
        return parse_judgment(reply, needs_pred=self.reply == "verdict")


def parse_judgment(reply: str, needs_pred: bool = True) -> dict | None:
    """``{"pred": "yes"|"no", "score": float}`` from a judge's reply, or None when it holds no such verdict
    (``needs_pred=False``: a score alone, ``pred`` None).

    Reads the first ``{...}`` that parses as JSON or a Python literal (judges wrap it in prose, use single
    quotes, capitalize Yes), else ``pred: yes ... score: 4`` written out; a missing field or a score outside 0-5
    is no verdict."""
    for block in re.findall(r"\{[^{}]*\}", reply):
        for parse in (json.loads, ast.literal_eval):
            try:
                value = parse(block)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
            if isinstance(value, dict):
                return _verdict({str(k).strip().lower(): v for k, v in value.items()}, needs_pred)
    pred = re.search(r"\bpred\w*['\"]?\s*[:=]\s*['\"]?(yes|no)\b", reply, re.IGNORECASE)
    score = re.search(r"\bscore['\"]?\s*[:=]\s*['\"]?(\d+(?:\.\d+)?)", reply, re.IGNORECASE)
    if not score or (needs_pred and not pred):
        return None
    return _verdict({"pred": pred.group(1) if pred else None, "score": score.group(1)}, needs_pred)


def _verdict(fields: dict, needs_pred: bool) -> dict | None:
    pred = str(fields.get("pred", "")).strip().lower() if needs_pred else None
    try:
        score = float(fields.get("score"))
    except (TypeError, ValueError):
        return None
    if (needs_pred and pred not in ("yes", "no")) or not 0 <= score <= 5:
        return None
    return {"pred": pred, "score": score}


class JudgmentCache:
    """Judge replies by (judge model, prompt version, question, answer, prediction), in one SQLite file that
    several processes (shards) may share."""

    def __init__(self, path=None):
        self.path = Path(path) if path else cache_dir() / "judgments.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS judgments (key TEXT PRIMARY KEY, reply TEXT, served_model TEXT)")
        self._db.commit()

    @staticmethod
    def key(model: str, version: str, *texts: str) -> str:
        """Judge model, prompt version, and what it read (question, answer, prediction)."""
        return hashlib.sha256(json.dumps([model, version, *texts]).encode()).hexdigest()

    def get(self, key: str) -> tuple[str, str] | None:
        with self._lock:
            return self._db.execute("SELECT reply, served_model FROM judgments WHERE key = ?", (key,)).fetchone()

    def put(self, key: str, reply: str, served_model: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO judgments VALUES (?, ?, ?)", (key, reply, served_model))
            self._db.commit()


class Judge:
    """Base: ``ask(messages) -> (reply, served model)``; ``judge`` adds the prompt, cache, parse retries and
    concurrency."""

    concurrency = 1

    def __init__(
        self,
        model: str,
        prompt: JudgePrompt,
        cache: JudgmentCache | None = None,
        parse_retries: int = 2,
        types: list[str] | None = None,
    ):
        self.model, self.prompt, self.cache, self.parse_retries = model, prompt, cache, parse_retries
        self.types = set(types) if types else None  # question types this judge scores (None: all)

    @property
    def name(self) -> str:
        return f"{self.model} ({self.prompt.version})"

    def check(self) -> None:
        """Raise a one-line error now if the judge cannot answer (before any inference time is spent)."""

    def ask(self, messages: list[dict]) -> tuple[str, str]:
        raise NotImplementedError

    def inputs(self, rows: list[dict]) -> list[dict]:
        """What this judge reads: one input per row of its types, or per pair (``pair``, ``turn`` 1 and 2) for a
        pairs prompt; each with ``question_id``, ``type`` and the prompt's fields."""
        mine = [row for row in rows if self.types is None or row.get("type") in self.types]
        if not self.prompt.pairs:
            return [
                {
                    "question_id": r["question_id"],
                    "type": r.get("type"),
                    "question": r["question"],
                    "answer": r["answer"],
                    "pred": r["pred"],
                }
                for r in mine
            ]
        turns: dict[str, dict] = {}
        for row in mine:
            turns.setdefault(str(row["pair"]), {})[int(row["turn"])] = row
        return [
            {
                "question_id": pair,
                "type": t[1].get("type"),
                "question": t[1]["question"],
                "answer": t[1]["answer"],
                "pred": t[1]["pred"],
                "question2": t[2]["question"],
                "pred2": t[2]["pred"],
            }
            for pair, t in turns.items()
            if set(t) == {1, 2}
        ]

    def judge_one(self, item: dict) -> dict:
        """The judgment of one input (from :meth:`inputs`): ``pred``, ``score`` (None on a parse failure), the
        raw reply."""
        fields = {k: v for k, v in item.items() if k not in ("question_id", "type")}
        key = JudgmentCache.key(self.model, self.prompt.version, *(f"{k}={fields[k]}" for k in sorted(fields)))
        cached = self.cache.get(key) if self.cache else None
        verdict = self.prompt.parse(cached[0]) if cached else None
        if verdict:
            reply, served = cached
        else:
            messages = self.prompt.messages(fields)
            for _ in range(1 + self.parse_retries):
                reply, served = self.ask(messages)
                verdict = self.prompt.parse(reply)
                if verdict:
                    break
            if self.cache:
                self.cache.put(key, reply, served)
        return {
            "question_id": item["question_id"],
            "type": item["type"],
            "judge": self.name,
            "judge_model": self.model,
            "prompt_version": self.prompt.version,
            "temperature": 0,
            "served_model": served,
            "pred": verdict["pred"] if verdict else None,
            "score": verdict["score"] if verdict else None,
            "parse_failure": verdict is None,
            "reply": reply,
        }

    def judge(self, items: list[dict]):
        """Yield judgments of :meth:`inputs` as they finish, ``concurrency`` requests at a time (one: in this thread,
        so that a local judge's kernels run on the thread that loaded it; see :mod:`vllm_i2v.web.model_thread`)."""
        if self.concurrency == 1:
            yield from map(self.judge_one, items)
            return
        with ThreadPoolExecutor(self.concurrency) as pool:
            for future in as_completed([pool.submit(self.judge_one, item) for item in items]):
                yield future.result()


class EndpointJudge(Judge):
    """A chat model behind an OpenAI-compatible endpoint: base URL and key from ``VLLM_I2V_JUDGE_BASE_URL`` /
    ``VLLM_I2V_JUDGE_API_KEY`` (else ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``)."""

    def __init__(
        self,
        model: str,
        prompt: JudgePrompt,
        cache=None,
        base_url: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 4,
        concurrency: int = 4,
        max_tokens: int = 128,
        parse_retries: int = 2,
        types: list[str] | None = None,
    ):
        super().__init__(model, prompt, cache, parse_retries, types)
        from openai import OpenAI

        self.base_url = base_url or os.environ.get(ENV_BASE_URL) or os.environ.get("OPENAI_BASE_URL")
        if not self.base_url:
            raise ConfigError(
                f"judge {model}: no endpoint; set {ENV_BASE_URL} (an OpenAI-compatible base URL, e.g. "
                "http://127.0.0.1:8000/v1) or pass --judge-url"
            )
        key = os.environ.get(ENV_API_KEY) or os.environ.get("OPENAI_API_KEY") or "none"
        self.client = OpenAI(base_url=self.base_url, api_key=key, timeout=timeout, max_retries=max_retries)
        self.concurrency, self.max_tokens = concurrency, max_tokens

    def check(self) -> None:
        try:
            self.client.with_options(max_retries=0, timeout=10.0).chat.completions.create(
                model=self.model, messages=[{"role": "user", "content": "Reply with OK."}], max_tokens=1, temperature=0
            )
        except Exception as exc:  # noqa: BLE001 - any failure here means the judge cannot work
            raise VllmI2VError(
                f"judge endpoint {self.base_url} (model {self.model}) is not usable: "
                f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            ) from None

    def ask(self, messages: list[dict]) -> tuple[str, str]:
        response = self.client.chat.completions.create(
            model=self.model, messages=messages, temperature=0, max_tokens=self.max_tokens
        )
        return response.choices[0].message.content or "", response.model or self.model


class LocalJudge(Judge):
    """A local transformers chat model (folder) as judge, greedy."""

    def __init__(
        self,
        path: str,
        prompt: JudgePrompt,
        cache=None,
        max_tokens: int = 128,
        parse_retries: int = 0,
        types: list[str] | None = None,
    ):
        super().__init__(f"local:{Path(path).name}", prompt, cache, parse_retries, types)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.lm = AutoModelForCausalLM.from_pretrained(path).eval()
        self.max_tokens = max_tokens

    def ask(self, messages: list[dict]) -> tuple[str, str]:
        import torch

        ids = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with torch.no_grad():
            out = self.lm.generate(**ids, do_sample=False, max_new_tokens=self.max_tokens)
        return self.tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True), self.model


def make_judge(
    spec: str,
    prompt: JudgePrompt,
    cache: JudgmentCache | None = None,
    types: list[str] | None = None,
    **endpoint_options,
) -> Judge:
    """``local:DIR`` for a local transformers model, else the model name at the configured endpoint (with
    ``endpoint_options``: ``base_url``, ``timeout``, ``max_retries``, ``concurrency``); ``types``: the question
    types it scores."""
    if spec.startswith("local:"):
        return LocalJudge(spec.removeprefix("local:"), prompt, cache, types=types)
    return EndpointJudge(spec, prompt, cache, types=types, **endpoint_options)
