"""``python -m acla gpu-check``: is this machine's torch right and fast for ACLA, and do the models learn?

One module per part: ``plan`` (sizes, the time budget), ``correctness`` (a), ``speed`` (b), ``learning`` (c),
``writing`` (the CSVs and READMEs under ``reports/gpu/<device>/``) and ``command`` (the entry point that
runs the parts in order and writes what they measured).
"""
