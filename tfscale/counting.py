"""The two ways of counting a model's size and compute, as `scaling.params` and `--params` name them.

"total": every parameter, embeddings included, and every FLOP (logits matmul, attention);
"non_embedding": Kaplan et al. (2020). What each counts for a model: `models/card.py`.
"""
from tfscale.errors import ConfigError

CONVENTIONS = ("total", "non_embedding")


def check_convention(convention):
    """`convention`, or a ConfigError naming the two there are."""
    if convention not in CONVENTIONS:
        raise ConfigError(f"parameter counts are {' or '.join(CONVENTIONS)} (scaling.params, --params), "
                          f"got {convention!r}")
    return convention
