"""The study of ``dvc.yaml``: one module per role. ``steps`` (a task's pipeline steps: search, retrain,
evaluate, ablation, efficiency), ``classical`` (the classical rows), ``experiments`` (chains and seed
runs from the command line), ``keys`` (where ACLA's keys land), ``report`` (tables and pages) and
``figures``. Every notebook of ``notebooks/`` calls into these."""
