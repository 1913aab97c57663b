"""Control: the KL term on the complement of RDS's flags."""
from sarft_core.training import selection
from sarft_core.training.methods.base import DhRule, Method, register

register(Method("flip", "Flip", "#9467bd", "KL on the samples RDS did not flag",
                dh=DhRule("bottom", lambda flags, seed: selection.flip(flags)), order=4))
