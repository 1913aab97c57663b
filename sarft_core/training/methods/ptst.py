"""PTST (Lyu et al., NeurIPS 2024, "Keeping LLMs Aligned After Fine-tuning: The Crucial Role of
Prompt Templates"): fine-tune without a safety prompt, test with one. In role-play the training
prompt is the role profile (as system turn); the test prompt is the profile followed by a safety
instruction: the grid's panel uses it for ptst cells, and ``eval --system-prompt safety`` gives it
to any run."""
from sarft_core.data.profiles import with_safety_instruction
from sarft_core.training.methods.base import Method, register

register(Method("ptst", "PTST", "#aec7e8", "SFT under the role profile; evaluated with the profile plus a safety prompt",
                system=lambda profile: profile.role_prompt,
                eval_system=lambda profile: with_safety_instruction(profile.role_prompt), labels_lambda=False, order=9))
