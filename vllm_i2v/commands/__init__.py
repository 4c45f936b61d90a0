"""The ``vllm-i2v`` subcommands, one module each: its parser (with ``--help`` text and an example) and a ``run``
that calls the library with typed arguments. :mod:`vllm_i2v.cli` only wires them together."""
