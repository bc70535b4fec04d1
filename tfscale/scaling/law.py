"""What a scaling law owns, so that the fitter, the planner and the report never ask its name.

A law maps an internal vector theta, in which fitting is well scaled over many decades, to its
named parameters; it gives log L and its gradient in theta (vectorised over points) and the
grid L-BFGS starts from. A law of N and D may also allocate compute: N_opt(C), D_opt(C) for
C = 6ND in closed form, and numerically for a model's own FLOPs per token.
"""
import dataclasses
import math

import numpy as np
from scipy import optimize

PLAN = ("num_params", "num_tokens", "flops")


@dataclasses.dataclass(frozen=True)
class Law:
    """A law of some result columns; subclasses give the maths."""
    name: str
    formula: str
    columns: tuple  # result columns, one per variable
    coefficients: tuple  # scale parameters, one per column
    exponents: tuple  # one per column: loss falls with a column when its coefficient and exponent are > 0

    allocates = False  # True where `loss(params, n, d)` and `allocation_6nd` exist

    @property
    def param_names(self):
        return (*self.coefficients, *self.exponents)

    @property
    def panels(self):
        """The plot's panels: loss against each column, and the compute-optimal frontier if any."""
        return (*self.columns, "frontier") if self.allocates else self.columns

    def features(self, rows):
        """log of each column, [n_points, len(columns)] (float64)."""
        return np.log(np.array([[float(r[c]) for c in self.columns] for r in rows], np.float64))

    def to_params(self, theta):
        raise NotImplementedError

    def to_theta(self, params):
        raise NotImplementedError

    def log_predict(self, theta, x):
        """log L for internal parameters `theta` at log-features `x` [n, k] -> [n]."""
        raise NotImplementedError

    def log_predict_grad(self, theta, x):
        """(log L [n], grad) for one `theta`: grad(v) is the gradient in theta of sum_n v_n log L_n,
        so the fitter never builds the [n, len(theta)] Jacobian."""
        raise NotImplementedError

    def grid(self):
        """L-BFGS starting points, [m, len(theta)]."""
        raise NotImplementedError

    def predict(self, params, rows):
        """Loss predicted by `params` (dict) for result rows (dicts with this law's columns)."""
        return np.exp(self.log_predict(self.to_theta(params), self.features(rows)))

    def irreducible(self, params):
        """The loss no model or data gets below."""
        return 0.0

    def target(self, params, loss, per_token=None):
        """Smallest compute predicted to reach `loss`: {num_params, num_tokens, flops}, None at or
        below the irreducible loss, NaNs where the optimal loss never crosses it."""
        if loss <= self.irreducible(params):
            return None
        return dict(zip(PLAN, self.target_compute(params, loss, per_token)))

    def target_compute(self, params, loss, per_token=None):
        """(N, D, C) by root finding on the optimal loss for C in [1, e^250]."""
        try:
            log_c = optimize.brentq(lambda lc: self.optimal_loss(params, math.exp(lc), per_token) - loss,
                                    0.0, 250.0, xtol=1e-10)
        except (ValueError, RuntimeError):
            return float("nan"), float("nan"), float("nan")
        n, d = self.allocation(params, math.exp(log_c), per_token)
        return n, d, math.exp(log_c)

    def allocation(self, params, flops, per_token=None):
        """(N_opt, D_opt) for budget `flops`; None for a law that cannot allocate.

        per_token: None for C = 6ND (closed form), else a function N -> FLOPs per token; the 6ND
        optimum brackets the numeric search.
        """
        if not self.allocates:
            return None
        n6, d6 = self.allocation_6nd(params, flops)
        if per_token is None:
            return n6, d6
        if not (math.isfinite(n6) and n6 > 0):
            return float("nan"), float("nan")

        def loss_at(log_n):
            n = math.exp(log_n)
            return self.loss(params, n, flops / per_token(n))

        result = optimize.minimize_scalar(loss_at, bounds=(math.log(n6) - 10, math.log(n6) + 10),
                                          method="bounded", options={"xatol": 1e-9})
        n = math.exp(result.x)
        return n, flops / per_token(n)

    def optimal_loss(self, params, flops, per_token=None):
        return self.loss(params, *self.allocation(params, flops, per_token))
