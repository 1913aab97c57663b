"""SEAL-style baseline: drop the samples ranked most unsafe by s_unsafe."""
from sarft_core.training import selection
from sarft_core.training.methods.base import DropRule, Method, register

register(Method("seal", "SEAL", "#e377c2", "drop the most unsafe-leaning samples (s_unsafe)",
                drop=DropRule(selection.seal_style_drop), order=6))
