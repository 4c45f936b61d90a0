"""What a user's terminal shows: results on stdout; warnings, logs and progress on stderr; other libraries'
noise a user cannot act on only with ``--verbose``.

DeepSpeed logs to **stdout** and warns as it is imported ("Setting accelerator to CPU", which transformers
triggers whenever DeepSpeed is installed); bitsandbytes warns on import that an optional kernel package is
missing; transformers draws a progress bar on every weight load; decord's bundled FFmpeg prints demuxer errors
for every broken file (which our one-line error already reports). :func:`configure` routes and quiets them; the
CLI calls it first, before any of those libraries is imported.
"""

from __future__ import annotations

import contextlib
import logging
import sys

_verbose = False


def verbose() -> bool:
    """Whether third-party logs and progress bars are shown (``--verbose``)."""
    return _verbose


class _BelowError(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return _verbose or record.levelno >= logging.ERROR


def configure(show_all: bool = False, imports_deepspeed: bool = True) -> None:
    """Route third-party logging for a command-line run; ``show_all`` (``--verbose``) keeps every message.

    ``imports_deepspeed=False`` is for a command that never imports DeepSpeed (chat): it then skips the import
    done here to route DeepSpeed's output, 0.3-0.5 s of a cold answer.
    """
    global _verbose
    _verbose = show_all
    logging.getLogger("DeepSpeed").addFilter(_BelowError())  # it sets its own level as it is imported
    logging.getLogger("bitsandbytes").setLevel(logging.NOTSET if show_all else logging.ERROR)
    # DeepSpeed's handler keeps the stream it found at import: import it while stdout points at stderr
    if imports_deepspeed:
        with contextlib.redirect_stdout(sys.stderr):
            try:
                import deepspeed  # noqa: F401  (transformers' Trainer imports it when it is installed)
            except ImportError:
                pass
    import transformers

    transformers.logging.set_verbosity_warning() if show_all else transformers.logging.set_verbosity_error()
    if not show_all:
        transformers.utils.logging.disable_progress_bar()


@contextlib.contextmanager
def progress_bars():
    """Show transformers' progress bars inside the block (a long one-off step such as a GGUF conversion)."""
    import transformers

    was_disabled = not transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.enable_progress_bar()
    try:
        yield
    finally:
        if was_disabled:
            transformers.utils.logging.disable_progress_bar()


def quiet_decord() -> None:
    """Keep decord's FFmpeg messages off the terminal unless ``--verbose`` (errors reach the user as ours)."""
    import decord

    decord.logging.set_level(decord.logging.WARNING if _verbose else decord.logging.QUIET)
