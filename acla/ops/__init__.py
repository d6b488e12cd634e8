"""ACLA's native operations: the C++ kernel and its loader (``extension``)."""
