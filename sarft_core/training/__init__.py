"""Training: one run (run.py), its trainer (trainer.py), losses, sample selection and the method registry."""
from __future__ import annotations

_FROM_RUN = ("DROP_METHODS", "KL_METHODS", "METHODS", "TrainConfig", "check_launch_environment", "train")


def __getattr__(name: str):
    # loaded on first use: the method registry (training.methods) is read by light modules (labels,
    # reproduce) that must not import torch through run.py
    if name in _FROM_RUN:
        from sarft_core.training import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_FROM_RUN)
