"""Plain supervised fine-tuning: every sample, cross-entropy only."""
from sarft_core.training.methods.base import Method, register

register(Method("sft", "SFT", "#d62728", "supervised fine-tuning, no safety term", labels_lambda=False, order=1))
