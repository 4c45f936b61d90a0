"""Scores of a run's predictions: judge-free metrics per row and every judge's verdicts, aggregated overall and
by question type. A number is always under the name of what produced it; two judges never share a column."""

from __future__ import annotations

import re
import shutil
from collections import defaultdict
from pathlib import Path

from .answers import exact_match, extract_choice, token_f1

JUDGE_FREE = {
    "exact-match": lambda row: 100.0 * exact_match(row["pred"], row["answer"]),
    "token-f1": lambda row: 100.0 * token_f1(row["pred"], row["answer"]),
    "choice-accuracy": lambda row: 100.0 * (extract_choice(row["pred"], row["options"]) == row["answer"]),
}
EMBEDDING_METRIC = "embedding-similarity"


def encoder_label(encoder: str) -> str:
    """A sentence encoder's name for column headers."""
    from ..models.sentence_encoder import DEFAULT_SENTENCE_ENCODER

    return "all-MiniLM-L6-v2" if encoder == DEFAULT_SENTENCE_ENCODER else Path(encoder).name


def embedding_similarities(rows: list[dict], encoder: str) -> list[float]:
    """Cosine similarity (x100) of each prediction to its reference answer in a sentence encoder's space."""
    from ..models.sentence_encoder import sentence_embeddings

    texts = [row["pred"] for row in rows] + [row["answer"] for row in rows]
    vectors = sentence_embeddings(texts, encoder, desc="embedding answers")
    return (100 * (vectors[: len(rows)] * vectors[len(rows) :]).sum(-1)).tolist()


def _summary(values_by_type: dict[str | None, list[float]]) -> dict:
    everything = [v for values in values_by_type.values() for v in values]
    out = {"mean": round(sum(everything) / len(everything), 2) if everything else None, "n": len(everything)}
    typed = {str(t): values for t, values in values_by_type.items() if t is not None}
    if typed:
        out["by_type"] = {t: {"mean": round(sum(v) / len(v), 2), "n": len(v)} for t, v in sorted(typed.items())}
    return out


def caption_scores(rows: list[dict]) -> dict:
    """Corpus BLEU-4, ROUGE-L, CIDEr and METEOR (x100) of the predictions against each row's ``references``,
    by the COCO caption toolkit (pycocoevalcap). Its PTB tokenizer and METEOR need a Java runtime; without one
    the tokens are lower-cased words without punctuation and METEOR is reported missing, with the reason."""
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge
    except ImportError:
        return {
            "caption metrics": {
                "mean": None,
                "n": 0,
                "missing": "pycocoevalcap is not installed: pip install 'vllm-i2v[caption]'",
            }
        }
    references = {str(i): [{"caption": c} for c in row["references"]] for i, row in enumerate(rows)}
    predictions = {str(i): [{"caption": row["pred"]}] for i, row in enumerate(rows)}
    java = shutil.which("java")
    if java:
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        tokenizer, tokens = "PTB", PTBTokenizer()
        references, predictions = tokens.tokenize(references), tokens.tokenize(predictions)
    else:
        simple = lambda text: " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())  # noqa: E731
        tokenizer = "simple (no Java for the PTB tokenizer)"
        references = {k: [simple(c["caption"]) for c in v] for k, v in references.items()}
        predictions = {k: [simple(c["caption"]) for c in v] for k, v in predictions.items()}
    scores = {
        "BLEU-4": Bleu(4).compute_score(references, predictions, verbose=0)[0][3],
        "ROUGE-L": Rouge().compute_score(references, predictions)[0],
        "CIDEr": Cider().compute_score(references, predictions)[0],
    }
    out = {
        f"{name} ({tokenizer} tokens)": {"mean": round(100 * value, 2), "n": len(rows)}
        for name, value in scores.items()
    }
    if java:
        from pycocoevalcap.meteor.meteor import Meteor

        out["METEOR (PTB tokens)"] = {
            "mean": round(100 * Meteor().compute_score(references, predictions)[0], 2),
            "n": len(rows),
        }
    else:
        out["METEOR"] = {"mean": None, "n": 0, "missing": "needs a Java runtime (the METEOR 1.5 jar)"}
    return out


def judge_free_scores(rows: list[dict], metrics: list[str], encoder: str | None) -> dict:
    """``{metric name: {"mean", "n", "by_type"}}`` for the task's judge-free metrics."""
    out = {}
    for name in metrics:
        if name == "caption":
            out.update(caption_scores(rows) if rows else {})
            continue
        if name == EMBEDDING_METRIC:
            if encoder is None:
                continue
            values = embedding_similarities(rows, encoder)
            label = f"{EMBEDDING_METRIC} ({encoder_label(encoder)})"
        elif name in JUDGE_FREE:
            values, label = [JUDGE_FREE[name](row) for row in rows], name
        else:
            continue
        by_type = defaultdict(list)
        for row, value in zip(rows, values):
            by_type[row.get("type")].append(value)
        out[label] = _summary(by_type)
    return out


def judge_scores(rows: list[dict], judgments: list[dict]) -> dict:
    """Per judge: accuracy (share of yes, %; None for score-only prompts), mean score (0-5), parse failures (never
    scored), by question type. Judgments of questions no longer among ``rows`` are left out."""
    current = {str(row["question_id"]) for row in rows} | {str(row["pair"]) for row in rows if "pair" in row}
    out = {}
    for judge in sorted({j["judge"] for j in judgments}):
        mine = [j for j in judgments if j["judge"] == judge and str(j["question_id"]) in current]
        scored = [j for j in mine if not j["parse_failure"]]
        accuracy, score = defaultdict(list), defaultdict(list)
        for j in scored:
            if j["pred"] is not None:
                accuracy[j.get("type")].append(100.0 * (j["pred"] == "yes"))
            score[j.get("type")].append(j["score"])
        acc, mean = _summary(accuracy), _summary(score)
        entry = {
            "accuracy": acc["mean"],
            "mean_score": mean["mean"],
            "n": mean["n"],
            "parse_failures": len(mine) - len(scored),
            "served_models": sorted({j["served_model"] for j in mine}),
            "prompt_versions": sorted({j.get("prompt_version") for j in mine} - {None}),
            "temperature": 0,
        }
        if "by_type" in mean:
            entry["by_type"] = {
                t: {
                    "accuracy": acc.get("by_type", {}).get(t, {}).get("mean"),
                    "mean_score": mean["by_type"][t]["mean"],
                    "n": mean["by_type"][t]["n"],
                }
                for t in mean["by_type"]
            }
        out[judge] = entry
    return out
