"""Attention modules (``attention``) and task backbones with insertion points (``backbones``)."""

from acla.models.attention import ATTENTIONS, build_attention
from acla.models.backbones import BACKBONES, RestorationNet, build_model

__all__ = ["ATTENTIONS", "BACKBONES", "RestorationNet", "build_attention", "build_model"]
