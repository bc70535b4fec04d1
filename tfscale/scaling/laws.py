"""Scaling laws as sums of power laws: L = E + sum_j A_j / x_j^alpha_j.

Every law here has that one shape, with one term per variable (model size N, data D, or
compute C). Fitting happens in log space, as Hoffmann et al. (2022, Approach 3) do:
log L = LogSumExp(e, a_1 - alpha_1 log x_1, ...), with E = exp(e) and A_j = exp(a_j), which keeps
E and the A_j positive and the problem well scaled over many decades.
"""
import dataclasses

import numpy as np
from scipy.special import logsumexp


@dataclasses.dataclass(frozen=True)
class Law:
    """One law: which result columns it uses and what its coefficients and exponents are called."""
    name: str
    formula: str
    columns: tuple  # result columns, one per term
    coefficients: tuple  # names of the A_j
    exponents: tuple  # names of the alpha_j

    @property
    def param_names(self):
        return ("E", *self.coefficients, *self.exponents)

    @property
    def num_terms(self):
        return len(self.columns)

    def features(self, rows):
        """log of each column, [n_points, num_terms] (float64)."""
        return np.log(np.array([[float(r[c]) for c in self.columns] for r in rows], np.float64))

    def to_params(self, theta):
        """Internal vector (e, a_1.., alpha_1..) -> {"E", "A", "alpha", ...}."""
        theta = np.asarray(theta, np.float64)
        k = self.num_terms
        values = [np.exp(theta[0]), *np.exp(theta[1:1 + k]), *theta[1 + k:]]
        return {name: float(v) for name, v in zip(self.param_names, values)}

    def to_theta(self, params):
        k = self.num_terms
        e = np.log(params["E"])
        a = [np.log(params[n]) for n in self.coefficients]
        return np.array([e, *a, *[params[n] for n in self.exponents]], np.float64)[: 1 + 2 * k]

    def log_predict(self, theta, x):
        """log L for internal parameters `theta` [..., 1+2k] at log-features `x` [n, k] -> [..., n]."""
        terms = _terms(np.asarray(theta, np.float64), x, self.num_terms)
        return logsumexp(terms, axis=-1)

    def predict(self, params, rows):
        """Loss predicted by `params` (dict) for result rows (dicts with this law's columns)."""
        return np.exp(self.log_predict(self.to_theta(params), self.features(rows)))


def _terms(theta, x, k):
    """[..., 1+2k] and [n, k] -> [..., n, 1+k]: (e, a_j - alpha_j x_j)."""
    e = theta[..., :1]
    a = theta[..., 1:1 + k]
    alpha = theta[..., 1 + k:1 + 2 * k]
    power = a[..., None, :] - alpha[..., None, :] * x  # [..., n, k]
    e = np.broadcast_to(e[..., None, :], power.shape[:-1] + (1,))
    return np.concatenate([e, power], axis=-1)


LAWS = {
    "chinchilla": Law("chinchilla", "L(N, D) = E + A/N^alpha + B/D^beta",
                      ("num_params", "num_tokens"), ("A", "B"), ("alpha", "beta")),
    "n": Law("n", "L(N) = E + A/N^alpha", ("num_params",), ("A",), ("alpha",)),
    "d": Law("d", "L(D) = E + B/D^beta", ("num_tokens",), ("B",), ("beta",)),
    "c": Law("c", "L(C) = E + A/C^alpha", ("flops",), ("A",), ("alpha",)),
}


def choose(rows):
    """`chinchilla` when both N and D vary in the data, else the law of the one that varies."""
    varies = {c: len({float(r[c]) for r in rows}) > 1 for c in ("num_params", "num_tokens")}
    if all(varies.values()):
        return LAWS["chinchilla"]
    if varies["num_params"]:
        return LAWS["n"]
    if varies["num_tokens"]:
        return LAWS["d"]
    return LAWS["c"]
