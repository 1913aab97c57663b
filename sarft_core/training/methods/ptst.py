"""PTST (Lyu et al., NeurIPS 2024, "Keeping LLMs Aligned After Fine-tuning: The Crucial Role of
Prompt Templates"): fine-tune without a safety prompt, test with one. In role-play the training
prompt is the role profile (as system turn); evaluate the run with ``eval --system-prompt safety``,
which puts the profile and a safety instruction in the system turn."""
from sarft_core.training.methods import Method, register

register(Method("ptst", "PTST", "#aec7e8", "SFT under the role profile; evaluated with the profile plus a safety prompt",
                system=lambda profile: profile.role_prompt, labels_lambda=False, order=9))
