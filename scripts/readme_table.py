"""Put a generated Markdown table into the README between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``, with
the command that regenerates it (used by the table and benchmark scripts)."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

from vllm_i2v.atomic import write_text_atomic


def replace_block(readme, name: str, markdown: str) -> None:
    """Replace the ``name`` block of ``readme`` by ``markdown`` and a "Regenerate: `python <this command>`" line."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = Path(readme).read_text()
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{readme}: no {start} ... {end} block to replace")
    script = Path(sys.argv[0]).resolve().relative_to(Path(__file__).resolve().parents[1])
    command = f"python {script} " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    block = f"{start}\n{markdown}\n\n<sub>Regenerate: `{command}`</sub>\n{end}"
    write_text_atomic(readme, pattern.sub(lambda _: block, text))


def publish(markdown: str, readme, name: str) -> None:
    """Print ``markdown``; with ``readme``, also put it in that file's ``name`` block (:func:`replace_block`)."""
    print(markdown)
    if readme:
        replace_block(readme, name, markdown)
