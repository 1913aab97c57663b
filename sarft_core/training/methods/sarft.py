"""SaRFT: the KL term on the samples RDS flags (margin > tau, then the analyst's overrides)."""
from sarft_core.training.methods.base import DhRule, Method, register

register(Method("sarft", "SaRFT", "#2ca02c", "KL to the reference on RDS's flagged samples",
                dh=DhRule("top", lambda flags, seed: dict(flags)), order=2))
