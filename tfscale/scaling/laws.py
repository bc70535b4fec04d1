"""The laws a fit can take, by name; each is a `law.Law` and owns its maths.

Adding a law is a module with its `Law` subclass and one entry here.
"""
from tfscale.scaling import kaplan, power_laws

LAWS = {law.name: law for law in (
    power_laws.Chinchilla("chinchilla", "L(N, D) = E + A/N^alpha + B/D^beta",
                          ("num_params", "num_tokens"), ("A", "B"), ("alpha", "beta")),
    power_laws.OneTerm("n", "L(N) = E + A/N^alpha", ("num_params",), ("A",), ("alpha",)),
    power_laws.OneTerm("d", "L(D) = E + B/D^beta", ("num_tokens",), ("B",), ("beta",)),
    power_laws.OneTerm("c", "L(C) = E + A/C^alpha", ("flops",), ("A",), ("alpha",)),
    kaplan.Kaplan("kaplan", "L(N, D) = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D",
                  ("num_params", "num_tokens"), ("N_c", "D_c"), ("alpha_N", "alpha_D")),
)}
DEFAULT = "chinchilla"  # the law of N and D that `choose` takes


def varying(rows):
    """{column: whether it takes more than one value} for N and D."""
    return {c: len({float(r[c]) for r in rows}) > 1 for c in ("num_params", "num_tokens")}


def choose(rows):
    """`DEFAULT` when both N and D vary in the data, else the law of the one that varies (C if neither)."""
    varies = varying(rows)
    if all(varies.values()):
        return LAWS[DEFAULT]
    if varies["num_params"]:
        return LAWS["n"]
    if varies["num_tokens"]:
        return LAWS["d"]
    return LAWS["c"]
