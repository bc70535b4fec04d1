"""Sums of power laws, L = E + sum_j A_j / x_j^alpha_j: one term (N, D or C) and Chinchilla's.

They are fitted in log space, as Hoffmann et al. (2022, Approach 3) do:
log L = LogSumExp(e, a_1 - alpha_1 log x_1, ...), with E = exp(e) and A_j = exp(a_j), which keeps
E and the A_j positive. With C = 6ND, minimising Chinchilla's L(N, D) = E + A/N^alpha + B/D^beta
under fixed C has a closed form (Appendix D): N_opt = G (C/6)^a, D_opt = (C/6)^b / G with
G = (alpha A / (beta B))^(1/(alpha+beta)), a = beta/(alpha+beta), b = alpha/(alpha+beta).
"""
import itertools

import numpy as np
from scipy.special import logsumexp

from tfscale.scaling import law as law_lib

# Hoffmann et al.'s grid: e in {-1, -.5, 0, .5, 1}, a_j in {0, 5, ..., 25}, alpha_j in {0, .5, ..., 2}.
GRID = {"e": np.arange(-1.0, 1.01, 0.5), "a": np.arange(0.0, 25.1, 5.0), "alpha": np.arange(0.0, 2.01, 0.5)}


def grid(k):
    """All initialisations for a sum of k power laws, [m, 1+2k] (4,500 for k = 2)."""
    axes = [GRID["e"]] + [GRID["a"]] * k + [GRID["alpha"]] * k
    return np.array(list(itertools.product(*axes)), np.float64)


def _terms(theta, x, k):
    """[..., 1+2k] and [n, k] -> [..., n, 1+k]: (e, a_j - alpha_j x_j)."""
    e = theta[..., :1]
    a = theta[..., 1:1 + k]
    alpha = theta[..., 1 + k:1 + 2 * k]
    power = a[..., None, :] - alpha[..., None, :] * x  # [..., n, k]
    e = np.broadcast_to(e[..., None, :], power.shape[:-1] + (1,))
    return np.concatenate([e, power], axis=-1)


class PowerSum(law_lib.Law):
    """E + sum_j A_j / x_j^alpha_j; theta = (e, a_1.., alpha_1..)."""

    @property
    def param_names(self):
        return ("E", *self.coefficients, *self.exponents)

    @property
    def num_terms(self):
        return len(self.columns)

    def to_params(self, theta):
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
        return logsumexp(_terms(np.asarray(theta, np.float64), x, self.num_terms), axis=-1)

    def log_predict_grad(self, theta, x):
        k = self.num_terms
        terms = np.empty((x.shape[0], 1 + k))  # (e, a_j - alpha_j x_j) per point
        terms[:, 0] = theta[0]
        terms[:, 1:] = theta[1:1 + k] - theta[1 + k:] * x
        top = terms.max(axis=-1, keepdims=True)
        exp = np.exp(terms - top)
        total = exp.sum(axis=-1)

        def grad(v):
            w = exp * (v / total)[:, None]  # v times d log L / d term (softmax weights), [n, 1+k]
            return np.concatenate([[w[:, 0].sum()], w[:, 1:].sum(axis=0), -np.einsum("nk,nk->k", w[:, 1:], x)])

        return top[:, 0] + np.log(total), grad

    def grid(self):
        return grid(self.num_terms)

    def irreducible(self, params):
        return params["E"]


class OneTerm(PowerSum):
    """E + A/x^alpha of one column; the target loss inverts it directly."""

    def target(self, params, loss, per_token=None):
        if loss <= params["E"]:
            return None
        a, alpha = params[self.coefficients[0]], np.float64(params[self.exponents[0]])
        with np.errstate(all="ignore"):  # an exponent at 0 gives inf, not an exception
            return {self.columns[0]: float((a / (loss - params["E"])) ** (1 / alpha))}


class Chinchilla(PowerSum):
    """E + A/N^alpha + B/D^beta, with the compute-optimal allocation in closed form for 6ND.

    NumPy floats throughout: a degenerate bootstrap refit (an exponent or coefficient at 0)
    gives inf or NaN, which its interval then ignores, instead of raising.
    """
    allocates = True

    def loss(self, p, n, d):
        with np.errstate(all="ignore"):
            return float(p["E"] + p["A"] / np.float64(n) ** p["alpha"] + p["B"] / np.float64(d) ** p["beta"])

    def allocation_6nd(self, p, flops):
        a, b = np.float64(p["alpha"]), np.float64(p["beta"])
        with np.errstate(all="ignore"):
            g = (a * p["A"] / (b * p["B"])) ** (1 / (a + b))
            return float(g * (flops / 6) ** (b / (a + b))), float((flops / 6) ** (a / (a + b)) / g)

    def target_compute(self, p, loss, per_token=None):
        """For C = 6ND the optimum balances the terms, alpha A/N^alpha = beta B/D^beta, which gives
        N and D directly; otherwise the root finding of `Law`."""
        if per_token is not None:
            return super().target_compute(p, loss, per_token)
        e, a, b = p["E"], np.float64(p["alpha"]), np.float64(p["beta"])
        with np.errstate(all="ignore"):
            x = (loss - e) * b / (a + b)  # A / N^alpha at the optimum
            y = (loss - e) * a / (a + b)  # B / D^beta
            n, d = (p["A"] / x) ** (1 / a), (p["B"] / y) ** (1 / b)
            return float(n), float(d), float(6 * n * d)
