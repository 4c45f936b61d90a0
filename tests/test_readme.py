"""The README's commands are the ones that run: CI runs its test command verbatim."""

from __future__ import annotations

import io
import json
import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    return re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text())


def test_ci_runs_the_readme_test_command():
    setup, tests = readme_commands()[:2]
    assert "vllm-i2v chat --video vllm_i2v/assets/sample.mp4" in setup
    assert tests in (ROOT / ".ci" / "run").read_text().splitlines()


def test_readme_build_specs_exist():
    for spec in re.findall(r"configs/model/[\w.\-]+\.yaml", (ROOT / "README.md").read_text()):
        assert (ROOT / spec).is_file(), spec


def test_readme_scripts_exist():
    for script in re.findall(r"scripts/[\w.\-]+\.(?:py|sh)", (ROOT / "README.md").read_text()):
        assert (ROOT / script).is_file(), script


# Every `vllm-i2v` command in the README's code blocks runs in a scratch folder (the repository's configs and package
# linked in), in README order, shortened by SHORTER; a command this machine cannot run is matched by NOT_RUN with
# the reason and the test that covers the same path instead.
SHORTER = [
    (r"--count \d+", "--count 4"),
    (r"training\.max_steps=\d+", "training.max_steps=2"),
    (r"^(vllm-i2v eval shapes --model .*)$", r"\1 --limit 4"),
]
NOT_RUN = {
    "vllm-i2v serve": "a server that runs until stopped: tests/test_web.py and tests/test_api.py start it",
    "-7b": "a 7B checkpoint from the hub: tests/test_convert.py converts tiny ones of the same classes",
    "clip-l336-qwen2.5-0.5b": "CLIP-L/336 and Qwen2.5-0.5B from the hub: tests/test_cli.py builds tiny specs",
    "outputs/my-model": "your own data and a build of hub models: the shapes block runs the same commands",
    "VideoInstruct_100K.json": "your own data: tests/test_data.py converts every layout",
    "configs/train/": "your own data and a build of hub models: tests/test_train.py trains every stage",
    "outputs/instruct-lora": "your own run: the shapes block merges its own",
    "outputs/run1": "a model trained in LLaVA-NeXT-Video's shape: tests/test_export.py exports one",
    "--endpoint": "a running server: tests/test_api.py evaluates through one",
    "activitynet-qa": "a dataset download and an LLM judge: tests/test_eval_run.py runs it against a local judge",
    "anet-run1": "the judged runs above: tests/test_eval_run.py merges and compares its own",
}
MADE_BY_TRAINING = "outputs/shapes-lora/final"


def readme_cli_commands() -> list[str]:
    """Each `vllm-i2v ...` command of the README's shell blocks, continuation lines joined, comments dropped."""
    commands = []
    for lang, block in re.findall(r"```(\w*)\n(.*?)\n```", (ROOT / "README.md").read_text(), re.S):
        if lang in ("", "bash"):
            for line in block.replace("\\\n", " ").splitlines():
                for part in line.split("&&"):
                    if part.strip().startswith("vllm-i2v "):
                        commands.append(shlex.join(shlex.split(part, comments=True)))
    return commands


def not_run_reason(command: str) -> str | None:
    return next((why for key, why in NOT_RUN.items() if key in command), None)


def test_every_not_run_entry_still_matches_a_command():
    commands = readme_cli_commands()
    assert [key for key in NOT_RUN if not any(key in c for c in commands)] == []


def test_every_readme_command_runs(tmp_path, monkeypatch, capsys):
    from vllm_i2v.cli import main
    from vllm_i2v.data.shapes import write_split

    for name in ("configs", "vllm_i2v"):
        (tmp_path / name).symlink_to(ROOT / name)
    write_split(tmp_path / "data" / "shapes", "test", 4, seed=0)  # what `eval shapes` would write, shorter
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # the interactive chat: end of input at once
    runnable = [c for c in readme_cli_commands() if not not_run_reason(c)]
    is_later = lambda c: MADE_BY_TRAINING in c and " train " not in f" {c} "  # noqa: E731
    for command in [c for c in runnable if not is_later(c)] + [c for c in runnable if is_later(c)]:
        for pattern, shorter in SHORTER:
            command = re.sub(pattern, shorter, command)
        capsys.readouterr()
        status = main(shlex.split(command)[1:])
        out, err = capsys.readouterr()
        assert status == 0, f"{command}\n{err[-2000:]}"
        if "--json" in command:
            json.loads(out)
    assert (tmp_path / MADE_BY_TRAINING / "trainable.safetensors").is_file()


def test_the_python_snippet_prints_what_the_readme_shows(tmp_path, monkeypatch, capsys):
    snippet = re.search(r"## Use it from Python\n\n```python\n(.*?)\n```", (ROOT / "README.md").read_text(), re.S)[1]
    shown = re.search(r"print\(.*\)  # (.*)$", snippet, re.M)[1]
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, "README.md", "exec"), {})
    assert capsys.readouterr().out.strip() == shown
