"""Kaplan et al. (2020, eq. 1.5): L(N, D) = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D.

No irreducible term: loss falls towards 0. Fitted in log space as
log L = a LogSumExp(u - r log N, v - log D) with r = alpha_N/alpha_D, a = alpha_D,
u = r log N_c, v = log D_c: the inner sum is then shaped like Chinchilla's. With C = 6ND the
optimum of the inner sum (N_c/N)^r + 6 D_c N / C has a closed form.
"""
import itertools

import numpy as np
from scipy.special import logsumexp

from tfscale.scaling import law as law_lib

# Starting points in the named parameters: N_c and D_c over 9 decades, exponents 0.05 to 0.8.
GRID = {"log_c": np.log(10.0 ** np.arange(8.0, 18.0, 3.0)), "alpha": np.array([0.05, 0.1, 0.2, 0.4, 0.8])}


class Kaplan(law_lib.Law):
    """theta = (u, v, r, a); parameters N_c, D_c, alpha_N, alpha_D."""
    allocates = True

    def to_params(self, theta):
        u, v, r, a = np.asarray(theta, np.float64)
        with np.errstate(all="ignore"):  # r near 0 in a degenerate refit gives inf, not an exception
            values = (np.exp(u / r), np.exp(v), r * a, a)
        return {name: float(x) for name, x in zip(self.param_names, values)}

    def to_theta(self, params):
        with np.errstate(all="ignore"):
            r = np.float64(params["alpha_N"]) / params["alpha_D"]
            return np.array([r * np.log(params["N_c"]), np.log(params["D_c"]), r, params["alpha_D"]], np.float64)

    def _inner(self, theta, x):
        u, v, r, _ = theta
        return np.stack([u - r * x[:, 0], v - x[:, 1]], axis=-1)  # [n, 2]

    def log_predict(self, theta, x):
        theta = np.asarray(theta, np.float64)
        return theta[3] * logsumexp(self._inner(theta, x), axis=-1)

    def log_predict_grad(self, theta, x):
        a = theta[3]
        terms = self._inner(theta, x)
        s = logsumexp(terms, axis=-1)
        w = np.exp(terms - s[:, None])  # softmax weights of the two terms

        def grad(v):
            aw = (a * v)[:, None] * w
            return np.array([aw[:, 0].sum(), aw[:, 1].sum(), -aw[:, 0] @ x[:, 0], v @ s])

        return a * s, grad

    def grid(self):
        points = itertools.product(GRID["log_c"], GRID["log_c"], GRID["alpha"], GRID["alpha"])
        return np.array([self.to_theta({"N_c": np.exp(n), "D_c": np.exp(d), "alpha_N": an, "alpha_D": ad})
                         for n, d, an, ad in points])

    def loss(self, p, n, d):
        with np.errstate(all="ignore"):
            r = np.float64(p["alpha_N"]) / p["alpha_D"]
            return float(((p["N_c"] / np.float64(n)) ** r + p["D_c"] / np.float64(d)) ** p["alpha_D"])

    def allocation_6nd(self, p, flops):
        """d/dN [(N_c/N)^r + 6 D_c N / C] = 0: N^(r+1) = r N_c^r C / (6 D_c)."""
        with np.errstate(all="ignore"):
            r = np.float64(p["alpha_N"]) / p["alpha_D"]
            n = np.exp((np.log(r) + r * np.log(p["N_c"]) + np.log(flops / (6 * p["D_c"]))) / (r + 1))
            return float(n), float(flops / (6 * n))
