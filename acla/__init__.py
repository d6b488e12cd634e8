"""acla: a replication of Adaptive Cross-Layer Attention for Image Restoration (arXiv 2203.03619).

Modules, one concern each: ``degradations`` (MATLAB-exact bicubic, AWGN, Bayer, JPEG), ``metrics``
(PSNR/SSIM per task convention), ``tasks`` (task names -> target, degradation, score), ``data``
(benchmark sets, training patches, downloads), ``classical`` (the classical rows), ``config``
(params.yaml), ``report`` (tables beside published numbers). Nothing runs at import.
"""

__version__ = "0.1.0"
