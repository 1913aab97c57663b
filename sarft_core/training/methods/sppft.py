"""SPPFT: SFT with the detected (or given) safety layers frozen (sarft_core.training.sppft)."""
from sarft_core.training.methods.base import Method, register

register(Method("sppft", "SPPFT", "#8c564b", "SFT with the safety layers frozen", labels_lambda=False, order=5))
