"""The README's commands are the ones that run: CI runs its test command verbatim."""

from __future__ import annotations

import re
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
