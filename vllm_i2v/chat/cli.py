"""``vllm-i2v chat``: interactive (streamed, line editing, history, slash commands) or scripted (--question)."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

from ..bundled import DEFAULT_MODEL
from ..errors import ConfigError, VllmI2VError
from .session import ChatSession

HELP = """commands:
  /video PATH   talk about another video (starts a new conversation)
  /reset        forget the conversation, keep the video
  /frames N     sample N frames (re-encodes the video; the conversation goes on over the new frames)
  /save FILE    write the transcript as JSON
  /help         this list
  /quit         leave (so does end of input, Ctrl-D)
Ctrl-C stops an answer mid-way."""


def load_chat_model(model=None, vision=None, llm=None, projector: str | None = None):
    """``(model, processor)`` from a checkpoint folder (default: the bundled shapes-world model), or built from a
    vision tower and an LLM with a new projector between them (answers mean nothing until it is trained)."""
    from ..models import VideoLLMProcessor, build_video_llm
    from ..models.checkpoint import load_model
    from ..models.projectors import DEFAULT_PROJECTOR

    if vision or llm:
        if not (vision and llm):
            raise ConfigError("building from parts needs both --vision and --llm")
        kind = projector or DEFAULT_PROJECTOR["type"]
        print(
            f"warning: the {kind} projector between --vision and --llm has new, untrained weights: answers mean "
            "nothing until it is trained (vllm-i2v train), or start from a converted LLaVA (vllm-i2v convert)",
            file=sys.stderr,
        )
        return build_video_llm({"vision": vision, "llm": llm, "projector": {"type": kind}})
    path = Path(model) if model else DEFAULT_MODEL
    if not model and not (path / "config.json").is_file():
        raise ConfigError(
            f"the bundled model is missing from {path} (scripts/build_demo_model.sh rebuilds it); pass --model DIR"
        )
    from ..plan import warn_if_too_large

    warn_if_too_large(path)
    return load_model(path), VideoLLMProcessor.from_pretrained(path)


def run_chat(
    session: ChatSession, questions: list[str] | None = None, as_json: bool = False, verbose: bool = False
) -> int:
    """Answer ``questions`` in order and print the answers (or, ``as_json``, the turns as JSON), or with none talk
    interactively."""
    if questions:
        return _scripted(session, questions, as_json, verbose)
    return _interactive(session, verbose)


def _scripted(session: ChatSession, questions: list[str], as_json: bool, verbose: bool) -> int:
    results = []
    for question in questions:
        answer, times = session.ask(question)
        results.append({"question": question, "answer": answer, "seconds": round(times.generate, 3)})
        if not as_json:
            print(answer, flush=True)
            if verbose:
                print(f"  [{times.describe()}]", file=sys.stderr)
    if as_json:
        print(json.dumps({"video": session.video_label, "turns": results}, ensure_ascii=False, indent=1))
    return 0


def _interactive(session: ChatSession, verbose: bool) -> int:
    _enable_line_editing()
    turns = "each question answered alone (--turns)" if session.independent_turns else "a conversation"
    print(
        f"video: {session.video or '(none: /video PATH)'} · {session.num_frames} frames · {turns} · /help for commands"
    )
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            print()
            return 0
        except KeyboardInterrupt:
            print()
            continue
        if not line:
            continue
        try:
            if line.startswith("/"):
                if _command(session, line) == "quit":
                    return 0
                continue
            _answer(session, line, verbose)
        except VllmI2VError as exc:
            print(f"error: {exc}")


def _answer(session: ChatSession, question: str, verbose: bool) -> None:
    print("model> ", end="", flush=True)
    previous = signal.signal(signal.SIGINT, lambda *_: session.cancel.set())  # Ctrl-C: stop this answer only
    try:
        _, times = session.ask(question, on_text=lambda piece: print(piece, end="", flush=True))
    finally:
        signal.signal(signal.SIGINT, previous)
    print(" [stopped]" if session.cancel.is_set() else "")
    if verbose:
        print(f"  [{times.describe()}]")


def _command(session: ChatSession, line: str) -> str | None:
    name, _, rest = line.partition(" ")
    rest = rest.strip()
    if name in ("/quit", "/exit"):
        return "quit"
    if name == "/help":
        print(HELP)
    elif name == "/video" and rest:
        session.set_video(rest)
        print(f"video: {rest} ({session.frame_count} frames)")
    elif name == "/reset":
        session.reset()
        print("conversation reset")
    elif name == "/frames" and rest.isdigit() and int(rest) > 0:
        session.set_frames(int(rest))
        print(f"{session.num_frames} frames (video re-encoded; the conversation goes on)")
    elif name == "/save" and rest:
        print(f"saved {session.save(rest)}")
    else:
        print(f"error: unknown or incomplete command {line!r} (/help lists them)")
    return None


def _enable_line_editing() -> None:
    """Line editing and a persistent history through readline, where the platform has it."""
    try:
        import atexit
        import readline
    except ImportError:
        return
    state = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "vllm_i2v"
    history = state / "chat_history"
    try:
        state.mkdir(parents=True, exist_ok=True)
        if history.exists():
            readline.read_history_file(history)
        atexit.register(readline.write_history_file, history)
    except OSError:
        pass
