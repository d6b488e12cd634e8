"""acla: a replication of Adaptive Cross-Layer Attention for Image Restoration (arXiv 2203.03619).

Grouped by role, lower layers first (``pyproject.toml`` holds the import contract): the library modules
here (``images``, ``files``, ``degradations``, ``metrics``, ``tasks``, ``provenance``, ``config``), ``data``
(benchmark sets, patches, downloads), ``ops`` (the attention's gather and C++ kernel), ``models`` (the
attention family with its equations, and the backbones), ``engine`` (train, search, evaluate,
efficiency), ``study`` (the pipeline's steps, tables, figures and pages), ``gpu_check`` and ``cli``.
Nothing runs at import.
"""

__version__ = "0.1.0"
