"""Control: a D_h of as many samples as RDS flags, drawn at random."""
from sarft_core.training import selection
from sarft_core.training.methods.base import DhRule, Method, register

register(Method("random", "Random", "#ff7f0e", "KL on as many random samples as RDS flags",
                dh=DhRule("random", selection.random_like), order=3))
