"""`vllm-i2v eval`: task layouts (the real ActivityNet-QA annotations), judge-reply parsing, metrics against
hand-computed values, an LLM judge behind a real HTTP server on 127.0.0.1, resume, shards, reports, compare."""

from __future__ import annotations

import json
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from tiny import random_frames

from vllm_i2v.bundled import DEFAULT_MODEL
from vllm_i2v.cli import main
from vllm_i2v.errors import VllmI2VError
from vllm_i2v.eval import read_jsonl, token_f1
from vllm_i2v.eval.judges import EndpointJudge, JudgePrompt, JudgmentCache, parse_judgment
from vllm_i2v.eval.scores import judge_free_scores, judge_scores
from vllm_i2v.eval.tasks import load_rows, load_task
from vllm_i2v.video.writer import write_video

ANET = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "activitynet-qa"


@pytest.mark.parametrize(
    "reply, verdict",
    [
        ("{'pred': 'yes', 'score': 4}", {"pred": "yes", "score": 4.0}),
        (
            'Sure! Here is my evaluation:\n{"pred": "no", "score": 1}\nThe answer misses the point.',
            {"pred": "no", "score": 1.0},
        ),
        ("{'pred': 'Yes', 'score': 5.0}", {"pred": "yes", "score": 5.0}),
        ("```python\n{'score': 3, 'pred': 'no'}\n```", {"pred": "no", "score": 3.0}),
        ("Evaluation: {'pred': 'yes'}", None),  # no score
        ("{'pred': 'maybe', 'score': 3}", None),  # not yes/no
        ("{'pred': 'yes', 'score': 9}", None),  # outside 0-5
        ("pred: yes, score: 4", {"pred": "yes", "score": 4.0}),
        ("I think the prediction is correct.", None),
    ],
)
def test_parse_judgment(reply, verdict):
    assert parse_judgment(reply) == verdict


def test_token_f1_and_scores_by_hand():
    # "a" is dropped; precision 2/3 (man, cooking of man, is, cooking), recall 1 -> F1 0.8
    assert token_f1("A man is cooking.", "man cooking") == pytest.approx(0.8)
    assert token_f1("two dogs", "2 dogs") == 1.0
    assert token_f1("red", "blue") == 0.0
    rows = [
        {"question_id": "1", "question": "q", "answer": "red car", "pred": "red car", "type": "color"},
        {"question_id": "2", "question": "q", "answer": "2", "pred": "two", "type": "number"},
        {"question_id": "3", "question": "q", "answer": "dog", "pred": "a cat", "type": "object"},
    ]
    free = judge_free_scores(rows, ["exact-match", "token-f1"], encoder=None)
    assert free["exact-match"]["mean"] == pytest.approx(200 / 3, abs=0.01)
    assert free["exact-match"]["by_type"]["object"] == {"mean": 0.0, "n": 1}
    judgments = [
        {
            "question_id": "1",
            "judge": "J (v1)",
            "served_model": "J-1",
            "pred": "yes",
            "score": 5.0,
            "parse_failure": False,
        },
        {
            "question_id": "2",
            "judge": "J (v1)",
            "served_model": "J-1",
            "pred": "no",
            "score": 2.0,
            "parse_failure": False,
        },
        {
            "question_id": "3",
            "judge": "J (v1)",
            "served_model": "J-1",
            "pred": None,
            "score": None,
            "parse_failure": True,
        },
    ]
    scored = judge_scores(rows, judgments)["J (v1)"]
    assert (
        scored["accuracy"] == 50.0
        and scored["mean_score"] == 3.5
        and scored["n"] == 2
        and scored["parse_failures"] == 1
    )


class ChatServer:
    """A real OpenAI chat-completions server on 127.0.0.1: replies by a rule per question; can fail or stall."""

    def __init__(self, reply=lambda question, answer, pred: "{'pred': 'yes', 'score': 4}"):
        self.reply, self.requests, self.fail_next, self.stall_next = reply, [], 0, 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                if server.fail_next > 0:
                    server.fail_next -= 1
                    self.send_response(500)
                    self.end_headers()
                    self.wfile.write(b'{"error": {"message": "overloaded"}}')
                    return
                if server.stall_next > 0:
                    server.stall_next -= 1
                    time.sleep(1.5)
                user = body["messages"][-1]["content"]
                fields = dict(
                    line.split(": ", 1)
                    for line in user.splitlines()
                    if line.split(": ", 1)[0] in ("Question", "Correct answer", "Predicted answer")
                )
                text = server.reply(
                    fields.get("Question"), fields.get("Correct answer"), fields.get("Predicted answer")
                )
                data = json.dumps(
                    {
                        "id": "x",
                        "object": "chat.completion",
                        "created": 0,
                        "model": "judge-2026-01-01",
                        "choices": [
                            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
                        ],
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


@pytest.fixture
def chat_server():
    server = ChatServer()
    yield server
    server.close()


def judge_rows(n: int) -> list[dict]:
    return [
        {"question_id": str(i), "question": f"question {i}", "answer": "yes", "pred": f"pred {i}"} for i in range(n)
    ]


def test_endpoint_judge_retries_errors_and_timeouts(chat_server, tmp_path):
    prompt = JudgePrompt.load("qa-judge-v1")
    judge = EndpointJudge(
        "judge",
        prompt,
        JudgmentCache(tmp_path / "c.sqlite"),
        base_url=chat_server.url,
        timeout=1.0,
        max_retries=3,
        concurrency=2,
    )
    judge.check()
    chat_server.fail_next, chat_server.stall_next = 2, 1  # two 500s and one reply slower than the timeout
    out = sorted(judge.judge(judge.inputs(judge_rows(3))), key=lambda j: j["question_id"])
    assert [j["pred"] for j in out] == ["yes"] * 3 and {j["served_model"] for j in out} == {"judge-2026-01-01"}
    assert all(r["temperature"] == 0 for r in chat_server.requests)
    # cached: judging the same predictions again asks nothing
    asked = len(chat_server.requests)
    assert [j["score"] for j in judge.judge(judge.inputs(judge_rows(3)))] == [4.0] * 3 and len(
        chat_server.requests
    ) == asked


def test_unparseable_replies_are_retried_then_recorded_as_failures(tmp_path):
    server = ChatServer(
        reply=lambda q, a, p: "I would say it is mostly right." if q == "question 1" else "{'pred': 'no', 'score': 0}"
    )
    try:
        judge = EndpointJudge("judge", JudgePrompt.load("qa-judge-v1"), None, base_url=server.url, parse_retries=2)
        out = {j["question_id"]: j for j in judge.judge(judge.inputs(judge_rows(2)))}
        assert out["1"]["parse_failure"] and out["1"]["pred"] is None and out["1"]["reply"].startswith("I would")
        assert not out["0"]["parse_failure"] and out["0"]["pred"] == "no"
        assert sum(r["messages"][-1]["content"].startswith("Question: question 1") for r in server.requests) == 3
    finally:
        server.close()


def test_unreachable_judge_fails_fast():
    judge = EndpointJudge("judge", JudgePrompt.load("qa-judge-v1"), None, base_url="http://127.0.0.1:9/v1")
    started = time.perf_counter()
    with pytest.raises(VllmI2VError, match="not usable"):
        judge.check()
    assert time.perf_counter() - started < 5


@pytest.fixture(scope="module")
def anet_data(tmp_path_factory):
    """Eight ActivityNet-QA test questions in the released layout — the real annotations where the shared
    fixtures are present, else eight written in the same layout — with clips for all but one of their videos."""
    root = tmp_path_factory.mktemp("anet")
    if (ANET / "test_q.json").is_file():
        questions = json.loads((ANET / "test_q.json").read_text())[:8]
        ids = {q["question_id"] for q in questions}
        answers = [a for a in json.loads((ANET / "test_a.json").read_text()) if a["question_id"] in ids]
    else:
        questions = [
            {"video_name": f"vid{i % 3}", "question": f"is it {i}", "question_id": f"v_vid{i % 3}_{i}"}
            for i in range(8)
        ]
        answers = [{"answer": "yes", "type": i % 9, "question_id": f"v_vid{i % 3}_{i}"} for i in range(8)]
    (root / "test_q.json").write_text(json.dumps(questions))
    (root / "test_a.json").write_text(json.dumps(answers))
    videos = sorted({q["video_name"] for q in questions})
    for i, name in enumerate(videos[1:]):  # videos[0] is missing
        write_video(root / "videos" / f"v_{name}.mp4", random_frames(4, 32, 32, seed=i), fps=4)
    return root, videos[0]


def test_activitynet_layout_reads_the_real_annotations(anet_data):
    if not (ANET / "test_q.json").is_file():
        pytest.skip(f"the ActivityNet-QA fixture annotations are not at {ANET}")
    root, missing = anet_data
    rows = load_rows(load_task("activitynet-qa"), root)
    assert len(rows) == 8 and all(r["video"].startswith("v_") for r in rows)
    assert {r["type"] for r in rows} <= set(load_task("activitynet-qa").type_names.values())
    assert f"v_{missing}.mp4" in {r["video"] for r in rows}


def run_cli(*args):
    assert main(list(map(str, args))) == 0


def test_eval_end_to_end_with_a_judge_resume_shards_and_compare(
    anet_data, saved_model, chat_server, tmp_path, monkeypatch
):
    root, missing = anet_data
    monkeypatch.setenv("VLLM_I2V_JUDGE_BASE_URL", chat_server.url)
    common = [
        "activitynet-qa",
        "--data",
        root,
        "--model",
        saved_model,
        "--judge",
        "judge-model",
        "--judge-cache",
        tmp_path / "cache.sqlite",
        "--max-new-tokens",
        6,
        "--batch-size",
        3,
    ]
    run_cli("eval", *common, "--out", tmp_path / "full")
    full = json.loads((tmp_path / "full" / "metrics.json").read_text())
    missing_count = sum(f"v_{missing}" in r["video"] for r in load_rows(load_task("activitynet-qa"), root))
    assert full["answered"] == 8 - missing_count and full["missing"] == missing_count
    judge = full["judges"]["judge-model (qa-judge-v1)"]
    assert judge["accuracy"] == 100.0 and judge["mean_score"] == 4.0 and judge["served_models"] == ["judge-2026-01-01"]
    assert {"exact-match", "token-f1"} <= set(full["judge_free"]) and full["max_new_tokens"] == 6
    report = (tmp_path / "full" / "report.md").read_text()
    assert f"v_{missing}" in report and "judge-model (qa-judge-v1): accuracy" in report
    assert (tmp_path / "full" / "scores.png").read_bytes()[:4] == b"\x89PNG"

    # an interrupted judging pass: a cut line and missing judgments; the rerun judges only those (from the cache)
    judgments = tmp_path / "full" / "judgments.jsonl"
    lines = judgments.read_text().splitlines()
    judgments.write_text("\n".join(lines[:2]) + "\n" + lines[2][:15])
    asked = len(chat_server.requests)
    run_cli("eval", *common, "--out", tmp_path / "full")
    assert len(read_jsonl(judgments)) == len(lines) and len(chat_server.requests) == asked + 1  # + the check

    # two shards, merged, give the same predictions and scores
    for i in (0, 1):
        run_cli("eval", *common, "--out", tmp_path / "sharded", "--shard", f"{i}/2")
    run_cli("eval", "merge", tmp_path / "sharded", "--judge", "judge-model", "--judge-cache", tmp_path / "cache.sqlite")
    by_id = lambda d: {r["question_id"]: r["pred"] for r in read_jsonl(tmp_path / d / "predictions.jsonl")}  # noqa: E731
    assert by_id("sharded") == by_id("full")
    sharded = json.loads((tmp_path / "sharded" / "metrics.json").read_text())
    assert sharded["judges"] == full["judges"] and sharded["missing"] == full["missing"]

    run_cli("eval", *common, "--out", tmp_path / "bf16", "--bf16")
    run_cli("eval", "compare", tmp_path / "full", tmp_path / "sharded", tmp_path / "bf16", "--out", tmp_path / "cmp")
    table = (tmp_path / "cmp" / "compare.md").read_text()
    assert "\n\nShared: task activitynet-qa" in table and (tmp_path / "cmp" / "compare.png").is_file()
    assert "\\n" not in table  # real line breaks, so the markdown tables render
    differ = table.split("Settings that differ between the runs:")[1].split("Shared:")[0]
    assert "| run | bf16 |" in differ and f"| {tmp_path / 'bf16'} | True |" in differ  # --bf16 is not left out
    assert "exact-match by question type:" in table


def test_unreachable_judge_stops_the_run_before_inference(anet_data, saved_model, tmp_path, capsys):
    root, _ = anet_data
    code = main(
        [
            "eval",
            "activitynet-qa",
            "--data",
            str(root),
            "--model",
            str(saved_model),
            "--out",
            str(tmp_path / "r"),
            "--judge",
            "judge-model",
            "--judge-url",
            "http://127.0.0.1:9/v1",
        ]
    )
    assert code == 2 and "not usable" in capsys.readouterr().err
    assert not (tmp_path / "r" / "predictions.jsonl").exists()


def test_bad_task_file_names_the_problem(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    shutil.copy(Path(load_task("activitynet-qa").source), bad)
    bad.write_text(bad.read_text().replace("layout: qa-pairs", "layout: nonsense"))
    assert main(["eval", str(bad), "--model", "m", "--out", str(tmp_path / "o")]) == 2
    assert f"{bad}: layout: must be one of 'qa-pairs'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "pred, letter",
    [
        ("B", "B"),
        ("(C) nothing", "C"),
        ("B. the blue truck", "B"),
        ("The answer is (A).", "A"),
        ("Answer: c", "C"),
        ("a red car", "A"),
        ("I think it is the blue truck", "B"),
        ("Z", None),
        ("", None),
        ("a red car or nothing", None),
    ],
)
def test_extract_choice(pred, letter):
    from vllm_i2v.eval import extract_choice

    assert extract_choice(pred, "(A) a red car\n(B) the blue truck\n(C) nothing") == letter


def test_multiple_choice_task_in_mvbench_layout(saved_model, tmp_path):
    """MVBench's layout (one JSON list per task type) read, prompted with lettered options, scored by letter."""
    root = tmp_path / "mvbench"
    (root / "json").mkdir(parents=True)
    for t, name in enumerate(("action_sequence", "object_shuffle")):
        rows = [
            {
                "video": f"{name}_{i}.mp4",
                "question": f"What happens {i}?",
                "candidates": ["up", "down", "left"],
                "answer": ["up", "down", "left"][i % 3],
            }
            for i in range(3)
        ]
        (root / "json" / f"{name}.json").write_text(json.dumps(rows))
        for i in range(3):
            write_video(root / "videos" / f"{name}_{i}.mp4", random_frames(4, 32, 32, seed=10 * t + i), fps=4)
    rows = load_rows(load_task("mvbench"), root)
    assert [r["answer"] for r in rows[:3]] == ["A", "B", "C"] and rows[0]["options"] == "(A) up\n(B) down\n(C) left"
    run_cli("eval", "mvbench", "--data", root, "--model", saved_model, "--out", tmp_path / "run", "--batch-size", 4)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    predictions = read_jsonl(tmp_path / "run" / "predictions.jsonl")
    from vllm_i2v.eval import extract_choice

    expected = 100 * sum(extract_choice(r["pred"], r["options"]) == r["answer"] for r in predictions) / 6
    assert metrics["judge_free"]["choice-accuracy"]["mean"] == pytest.approx(expected, abs=0.01)
    assert set(metrics["judge_free"]["choice-accuracy"]["by_type"]) == {"action_sequence", "object_shuffle"}


def test_local_transformers_judge(parts, tmp_path):
    """A local chat model judges through its own chat template; a random tiny one gives no verdict, which is
    recorded as a parse failure, never scored."""
    from vllm_i2v.eval.judges import make_judge

    judge = make_judge(f"local:{parts['llm']}", JudgePrompt.load("qa-judge-v1"), JudgmentCache(tmp_path / "c.sqlite"))
    assert judge.name == f"local:{parts['llm'].name} (qa-judge-v1)"
    [judgment] = judge.judge(judge.inputs(judge_rows(1)))
    assert judgment["parse_failure"] and judgment["score"] is None and isinstance(judgment["reply"], str)
    assert judge_scores([{**judge_rows(1)[0], "type": None}], [judgment])[judge.name]["parse_failures"] == 1


def test_caption_scores_by_hand():
    from vllm_i2v.eval.scores import caption_scores

    same = [
        {"question_id": "a", "pred": "a man is slicing a red tomato", "references": ["A man is slicing a red tomato."]}
    ]
    scores = caption_scores(same)
    bleu = next(v for k, v in scores.items() if k.startswith("BLEU-4"))
    rouge = next(v for k, v in scores.items() if k.startswith("ROUGE-L"))
    assert bleu["mean"] == pytest.approx(100, abs=0.01) and rouge["mean"] == pytest.approx(100, abs=0.01)
    disjoint = caption_scores(
        [{"question_id": "a", "pred": "dogs run outside quickly", "references": ["a man cooks pasta"]}]
    )
    assert all(v["mean"] in (0.0, None) for v in disjoint.values())
    meteor = next(v for k, v in scores.items() if k.startswith("METEOR"))
    assert (meteor["mean"] is None) == (shutil.which("java") is None)


def test_captioning_task_in_msrvtt_layout(saved_model, tmp_path):
    root = tmp_path / "msrvtt"
    info = {
        "videos": [{"video_id": f"video{i}", "split": "test" if i < 2 else "train"} for i in range(3)],
        "sentences": [
            {"video_id": f"video{i}", "caption": f"a clip number {i} with {k} things"}
            for i in range(3)
            for k in range(2)
        ],
    }
    root.mkdir()
    (root / "test_videodatainfo.json").write_text(json.dumps(info))
    for i in range(2):
        write_video(root / "videos" / f"video{i}.mp4", random_frames(4, 32, 32, seed=i), fps=4)
    rows = load_rows(load_task("msrvtt-caption"), root)
    assert [r["video"] for r in rows] == ["video0.mp4", "video1.mp4"] and len(rows[0]["references"]) == 2
    run_cli(
        "eval",
        "msrvtt-caption",
        "--data",
        root,
        "--model",
        saved_model,
        "--out",
        tmp_path / "run",
        "--max-new-tokens",
        6,
    )
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert any(k.startswith("CIDEr") for k in metrics["judge_free"]) and metrics["answered"] == 2
    assert "CIDEr" in (tmp_path / "run" / "report.md").read_text()


def test_score_only_replies():
    assert parse_judgment("{'score': 3}", needs_pred=False) == {"pred": None, "score": 3.0}
    assert parse_judgment("Score: 2 - the answer is vague.", needs_pred=False) == {"pred": None, "score": 2.0}
    assert parse_judgment("{'score': 3}") is None  # a verdict prompt needs pred
    assert parse_judgment("{'score': 'high'}", needs_pred=False) is None


def test_generative_benchmark_five_axes(saved_model, chat_server, tmp_path, monkeypatch):
    """Video-ChatGPT's generative benchmark layout: three files, five judge prompts (one per axis), the
    consistency pair judged once with both answers."""
    root = tmp_path / "vcg"
    root.mkdir()
    (root / "generic_qa.json").write_text(
        json.dumps(
            [
                {"video_name": "v_a", "Q": "What happens?", "A": "A man cooks."},
                {"video_name": "v_b", "Q": "Who is there?", "A": "Two dogs."},
            ]
        )
    )
    (root / "temporal_qa.json").write_text(json.dumps([{"video_name": "v_a", "Q": "What first?", "A": "He cuts."}]))
    (root / "consistency_qa.json").write_text(
        json.dumps([{"video_name": "v_b", "Q1": "What animal?", "Q2": "Which pet?", "A": "Dogs."}])
    )
    for i, name in enumerate(("v_a", "v_b")):
        write_video(root / "videos" / f"{name}.mp4", random_frames(4, 32, 32, seed=i), fps=4)
    monkeypatch.setenv("VLLM_I2V_JUDGE_BASE_URL", chat_server.url)
    run_cli(
        "eval",
        "vcgbench",
        "--data",
        root,
        "--model",
        saved_model,
        "--out",
        tmp_path / "run",
        "--judge",
        "jm",
        "--judge-cache",
        tmp_path / "c.sqlite",
        "--max-new-tokens",
        4,
    )
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    axes = {name: entry for name, entry in metrics["judges"].items()}
    assert set(axes) == {f"jm (vcg-{a}-v1)" for a in ("correctness", "detail", "context", "temporal", "consistency")}
    assert axes["jm (vcg-correctness-v1)"]["n"] == 2 and axes["jm (vcg-temporal-v1)"]["n"] == 1
    assert axes["jm (vcg-consistency-v1)"]["n"] == 1 and all(
        e["mean_score"] == 4.0 and e["accuracy"] is None for e in axes.values()
    )
    pair_prompt = next(
        r["messages"][-1]["content"] for r in chat_server.requests if "Question 2:" in r["messages"][-1]["content"]
    )
    assert "What animal?" in pair_prompt and "Which pet?" in pair_prompt
    assert "jm (vcg-consistency-v1): score" in (tmp_path / "run" / "report.md").read_text()


def test_msvd_original_layout_maps_video_ids_to_clip_names(tmp_path):
    root = tmp_path / "msvd"
    (root / "videos").mkdir(parents=True)
    (root / "test_qa.json").write_text(
        json.dumps(
            [
                {"answer": "dog", "id": 7, "question": "what runs?", "video_id": 2},
                {"answer": "man", "id": 8, "question": "who cooks?", "video_id": 1},
            ]
        )
    )
    (root / "youtube_mapping.txt").write_text("-4wsuPCjDBc_5_15 vid1\nabc_1_9 vid2\n")
    write_video(root / "videos" / "abc_1_9.avi", random_frames(4, 32, 32), fps=4)
    rows = load_rows(load_task("msvd-qa-original"), root)
    assert [(r["question_id"], r["video"], r["answer"]) for r in rows] == [
        ("7", "abc_1_9.avi", "dog"),
        ("8", "-4wsuPCjDBc_5_15.mp4", "man"),
    ]
    (root / "youtube_mapping.txt").write_text("abc_1_9 vid2\n")
    with pytest.raises(VllmI2VError, match="no entry for video vid1"):
        load_rows(load_task("msvd-qa-original"), root)


def test_a_row_without_a_field_is_one_clear_error(tmp_path, capsys):
    (tmp_path / "test_q.json").write_text(json.dumps([{"question": "why?", "question_id": "q1"}]))
    (tmp_path / "test_a.json").write_text(json.dumps([{"answer": "yes", "question_id": "q1"}]))
    model = str(DEFAULT_MODEL)  # checked before the data, loaded after it
    assert (
        main(["eval", "activitynet-qa", "--data", str(tmp_path), "--model", model, "--out", str(tmp_path / "o")]) == 2
    )
    assert "has no 'video_name' field" in capsys.readouterr().err
