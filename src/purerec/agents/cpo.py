"""Constrained policy optimisation (CPO, Achiam et al. 2017): the trust-region step of one update,
as pure jit-able functions on flat parameter vectors (``jax.flatten_util.ravel_pytree``).

The local problem (Achiam et al. 2017, eq. 10, with the trust region written ½xᵀHx ≤ δ):

    max_x  gᵀx   s.t.   bᵀx + c ≤ 0,   ½ xᵀ H x ≤ δ

with x = θ' − θ, g = ∇ of the surrogate reward (to be **increased**), b = ∇ of the surrogate cost,
c = J_c − limit (the constraint value now), H the KL Hessian (Fisher). H⁻¹g and H⁻¹b come from
``conjugate_gradient`` on a Hessian-vector product, so H is never formed.

Achiam et al.'s appendix 10.2 writes the same problem as a *minimisation* of g_Aᵀx with
g_A = −g and the trust region xᵀHx ≤ δ_A, δ_A = 2δ. ``dual_step`` works in that convention
(their q, r, s, A, B, λ_mid verbatim, with δ_A = 2δ) and returns the step in ours:

    q = g_AᵀH⁻¹g_A,  r = g_AᵀH⁻¹b,  s = bᵀH⁻¹b,  A = q − r²/s,  B = 2δ − c²/s,  λ_mid = r/c.

Cases (``case``):

* ``INFEASIBLE`` (2): c > 0 and c²/s − 2δ > 0, no point of the trust region satisfies the
  linearised constraint; recovery step x = −√(2δ/s) H⁻¹b (the largest decrease of the cost).
* ``INACTIVE`` (0): the constraint does not bind, ν* = 0 and x = √(2δ/q) H⁻¹g (the plain natural-
  gradient trust-region step). This is the case c < 0 and c²/s − 2δ > 0 (the whole trust region is
  feasible: λ* = √(q/2δ), App. 10.2 first remark) or the dual optimum falls in Λ_b below.
* ``ACTIVE`` (1): ν* > 0, x = (H⁻¹g − ν* H⁻¹b)/λ*, on the constraint's boundary bᵀx + c = 0.

The dual (App. 10.2, eq. 20-21): with Λ_a = {λ ≥ 0 : λc − r > 0} and Λ_b = {λ ≥ 0 : λc − r ≤ 0},

    f_a(λ) = −½ (A/λ + Bλ) − rc/s          on Λ_a   (ν* = (λc − r)/s > 0)
    f_b(λ) = −½ (q/λ + 2δλ)                on Λ_b   (ν* = 0)

both concave on λ > 0, maximised at λ_a = √(A/B) and λ_b = √(q/2δ). λ* = the better of λ_a projected
onto Λ_a and λ_b projected onto Λ_b; ν* = max(0, (λ*c − r)/s). Λ_a is the interval (λ_mid, ∞) when
c > 0 (all of λ ≥ 0 when λ_mid ≤ 0) and [0, λ_mid) when c < 0 (empty when λ_mid ≤ 0); Λ_b is its
complement in [0, ∞); when c = 0, Λ_a is everything if r < 0 and nothing otherwise. Every case is
selected with ``jnp.where`` (no Python branching on traced values).

Bugs of the public FCPO code (TobyGE/FCPO cpo.py) that are **not** reproduced: its
``calc_dual_vars`` overwrites λ after the λ_mid ≤ 0 branch (here each region is projected once
and the dual values compared), and its line search passes ``step_len · direction`` into a
criterion that scales by ``step_len`` again (here the candidate is θ + β^j x, scaled once).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

INACTIVE, ACTIVE, INFEASIBLE = 0, 1, 2
EPS = 1e-8


def conjugate_gradient(avp: Callable[[jax.Array], jax.Array], b: jax.Array, iters: int) -> jax.Array:
    """x ≈ A⁻¹b for a symmetric positive-definite A given only as x ↦ Ax (``iters`` CG iterations
    from x = 0; stops moving once the residual is 0)."""

    def body(_, carry):
        x, r, p, rr = carry
        ap = avp(p)
        pap = jnp.dot(p, ap)
        alpha = jnp.where(pap > 0, rr / jnp.where(pap > 0, pap, 1.0), 0.0)
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = jnp.dot(r, r)
        beta = jnp.where(rr > 0, rr_new / jnp.where(rr > 0, rr, 1.0), 0.0)
        return x, r, r + beta * p, rr_new

    x0 = jnp.zeros_like(b)
    x, *_ = jax.lax.fori_loop(0, iters, body, (x0, b, b, jnp.dot(b, b)))
    return x


class Dual(NamedTuple):
    lam: jax.Array  # λ*, the trust region's multiplier (Achiam's convention)
    nu: jax.Array  # ν*, the cost constraint's multiplier
    case: jax.Array  # i32: INACTIVE, ACTIVE or INFEASIBLE


def dual_vars(q: jax.Array, r: jax.Array, s: jax.Array, c: jax.Array, delta: jax.Array) -> Dual:
    """(λ*, ν*, case) of the CPO dual in Achiam et al.'s convention (q, r from g_A = −g; see the
    module docstring). ``delta`` is the bound of ½xᵀHx (so Achiam's δ is 2·delta)."""
    s_ = jnp.maximum(s, EPS)
    q_ = jnp.maximum(q, EPS)
    two_d = 2.0 * delta
    infeasible = (c > 0) & (c**2 / s_ - two_d > 0)
    whole_tr_feasible = (c < 0) & (c**2 / s_ - two_d > 0)

    A = jnp.maximum(q_ - r**2 / s_, EPS)  # ≥ 0 by Cauchy-Schwarz
    B = jnp.maximum(two_d - c**2 / s_, EPS)  # ≥ 0 outside the two cases above
    lam_a = jnp.sqrt(A / B)
    lam_b = jnp.sqrt(q_ / two_d)
    safe_c = jnp.where(c == 0, 1.0, c)
    lam_mid = r / safe_c
    inf = jnp.inf
    # Λ_a = [lo_a, hi_a], Λ_b = [lo_b, hi_b] (empty: lo > hi); boundaries shared, where f_a = f_b.
    pos_mid = jnp.maximum(lam_mid, 0.0)
    lo_a = jnp.where(c > 0, pos_mid, jnp.where(c < 0, 0.0, jnp.where(r < 0, 0.0, inf)))
    hi_a = jnp.where(c > 0, inf, jnp.where(c < 0, lam_mid, jnp.where(r < 0, inf, -inf)))
    lo_b = jnp.where(c > 0, 0.0, jnp.where(c < 0, pos_mid, jnp.where(r < 0, inf, 0.0)))
    hi_b = jnp.where(c > 0, lam_mid, jnp.where(c < 0, inf, jnp.where(r < 0, -inf, inf)))
    a_ok = lo_a <= hi_a
    b_ok = lo_b <= hi_b
    la = jnp.clip(lam_a, lo_a, hi_a)
    lb = jnp.clip(lam_b, lo_b, hi_b)
    la = jnp.maximum(jnp.where(a_ok, la, 1.0), EPS)
    lb = jnp.maximum(jnp.where(b_ok, lb, 1.0), EPS)
    f_a = jnp.where(a_ok, -0.5 * (A / la + B * la) - r * c / s_, -inf)
    f_b = jnp.where(b_ok, -0.5 * (q_ / lb + two_d * lb), -inf)
    lam = jnp.where(f_a >= f_b, la, lb)
    lam = jnp.where(whole_tr_feasible, lam_b, lam)
    nu = jnp.maximum(0.0, (lam * c - r) / s_)
    nu = jnp.where(whole_tr_feasible | infeasible, 0.0, nu)
    case = jnp.where(infeasible, INFEASIBLE, jnp.where(nu > 0, ACTIVE, INACTIVE)).astype(jnp.int32)
    return Dual(lam=lam, nu=nu, case=case)


def dual_step(hinv_g: jax.Array, hinv_b: jax.Array, g: jax.Array, b: jax.Array, c: jax.Array,
              delta: jax.Array) -> tuple[jax.Array, Dual]:
    """The step x of max gᵀx s.t. bᵀx + c ≤ 0, ½xᵀHx ≤ δ, from H⁻¹g and H⁻¹b (reward gradient g, to
    be increased): x = (H⁻¹g − ν*H⁻¹b)/λ* (= Achiam's −(H⁻¹g_A + ν*H⁻¹b)/λ*), or the recovery
    step −√(2δ/s) H⁻¹b when infeasible. Returns (x, Dual)."""
    q = jnp.dot(g, hinv_g)  # g_AᵀH⁻¹g_A = gᵀH⁻¹g
    r = -jnp.dot(g, hinv_b)  # g_AᵀH⁻¹b
    s = jnp.dot(b, hinv_b)
    d = dual_vars(q, r, s, c, delta)
    x_opt = (hinv_g - d.nu * hinv_b) / d.lam
    x_rec = -jnp.sqrt(2.0 * delta / jnp.maximum(s, EPS)) * hinv_b
    return jnp.where(d.case == INFEASIBLE, x_rec, x_opt), d


def line_search(evaluate: Callable[[jax.Array], tuple[jax.Array, ...]], theta: jax.Array, x: jax.Array,
                accept: Callable[..., jax.Array], backtrack: float, iters: int) -> tuple[jax.Array, jax.Array]:
    """Backtracking: the first θ + β^j x, j = 0 .. iters − 1 (β = ``backtrack``), with
    ``accept(*evaluate(θ'))`` true; θ itself (fraction 0) when none is. Returns (θ', fraction)."""

    def cond(carry):
        j, done = carry
        return (j < iters) & ~done

    def body(carry):
        j, _ = carry
        return j + 1, accept(*evaluate(theta + backtrack**j * x))

    j, done = jax.lax.while_loop(cond, body, (jnp.int32(0), jnp.bool_(False)))
    frac = jnp.where(done, jnp.asarray(backtrack, x.dtype) ** (j - 1).astype(x.dtype), 0.0)
    return theta + frac * x, frac
