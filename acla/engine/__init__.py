"""The engine: training (``train``, with ``live`` for its metrics), the insertion search (``search``),
inference and scoring (``evaluate``) and the cost of a model (``efficiency``)."""
