"""The vllm-i2v command: help, build, encode over the bundled sample, and one-line errors."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vllm_i2v.bundled import SAMPLE_VIDEO
from vllm_i2v.cli import main


@pytest.fixture(scope="module")
def spec_file(parts, tmp_path_factory):
    path = tmp_path_factory.mktemp("spec") / "tiny.yaml"
    path.write_text(
        yaml.safe_dump(
            {"vision": str(parts["clip"]), "llm": str(parts["llm"]), "projector": {"type": "stpool"}, "num_frames": 6}
        )
    )
    return path


def test_console_script_help():
    script = Path(sys.executable).with_name("vllm-i2v")  # installed beside this interpreter
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True).stdout
    assert "build" in out and "encode" in out and "example:" in out
    for command in ("build", "encode"):
        out = subprocess.run(
            [sys.executable, "-m", "vllm_i2v.cli", command, "--help"], capture_output=True, text=True, check=True
        ).stdout
        assert "example:" in out


def test_build_then_encode_the_bundled_sample(spec_file, tmp_path, capsys):
    assert SAMPLE_VIDEO.is_file()
    out_dir = tmp_path / "model"
    assert main(["build", str(spec_file), str(out_dir), "projector.type=adapool", "projector.grid=[2,2,2]"]) == 0
    assert yaml.safe_load((out_dir / "build_spec.yaml").read_text())["projector"] == {
        "type": "adapool",
        "grid": [2, 2, 2],
    }
    assert main(["encode", "--model", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"frames +\(6, 224, 224, 3\)", out)  # num_frames from the spec
    assert re.search(r"visual tokens +\(8, 64\) \(adapool\)", out)  # 2x2x2 grid, LLM width 64
    for stage in ("decode", "vision tower", "projector", "merge", "LLM prefill"):
        assert stage in out


def test_encode_with_fps_sampling_and_a_window(spec_file, tmp_path, capsys):
    out_dir = tmp_path / "model"
    assert main(["build", str(spec_file), str(out_dir)]) == 0
    assert (
        main(
            [
                "encode",
                str(SAMPLE_VIDEO),
                "--model",
                str(out_dir),
                "--sampler",
                "fps",
                "--fps",
                "2",
                "--start",
                "1",
                "--end",
                "3",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert re.search(r"frames +\(5, 224, 224, 3\) at t = 1.00, 1.50, 2.00, 2.50, 3.00 s", out)
    assert re.search(r"visual tokens +\(21, 64\) \(stpool\)", out)  # 5 frame tokens + 16 patch tokens


@pytest.mark.parametrize(
    "argv, message",
    [
        (["encode", "missing.mp4", "--model", "{model}"], "error: missing.mp4: no such file or directory"),
        (
            ["build", "{spec}", "{tmp}/x", "projector.type=perceiver"],
            "error: unknown projector 'perceiver'; known projectors: stpool, adapool, qformer, mlp",
        ),
        (["build", "{tmp}/nope.yaml", "{tmp}/x"], "nope.yaml: no such build spec"),
        (
            ["build", "{spec}", "{tmp}/x", "llm=package://not_a_package/model.gguf"],
            "Python package 'not_a_package' is not installed",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, spec_file, saved_model, tmp_path, capsys):
    argv = [a.format(model=saved_model, spec=spec_file, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0]
