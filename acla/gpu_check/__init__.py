"""``python -m acla gpu-check``: the machine check (``command``)."""
