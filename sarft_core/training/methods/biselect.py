"""Bi-Selection-style baseline: drop unsafe-leaning samples unless strongly in character."""
from sarft_core.training import selection
from sarft_core.training.methods.base import DropRule, Method, register

register(Method("biselect", "Bi-Select", "#17becf", "drop unsafe-leaning samples that carry little of the character",
                drop=DropRule(selection.biselect_drop), order=7))
