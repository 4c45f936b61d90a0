"""Models shipped inside the package as parts bundles (see :func:`vllm_i2v.models.checkpoint.export_parts`).

``shapes-smollm2``: the shapes-world video model ``scripts/build_demo_model.sh`` builds, the chat CLI's default.
"""

from pathlib import Path

DEFAULT_MODEL = Path(__file__).resolve().parent / "shapes-smollm2"
SAMPLE_VIDEO = Path(__file__).resolve().parent.parent / "assets" / "sample.mp4"  # the demo clip the model knows
