"""The gradient tolerance model (spec 5.2, gradients): the modelled error ``w`` of dq, dk, dv,
dbias and dsinks of a legitimate backward computing in dtype ``u``, scaled by the magnitudes
of the terms each gradient sums -- never by |lse|.

For one (b, h), with the golden forward quantities of :mod:`.tolerance` (p_ij before dropout,
the dropout factor f_ij, o_i, the score error bound delta_ij of the forward model) and the
upstream gradient dO:

    dP_ij = f_ij <dO_i, v_j>,   D_i = <dO_i, o_i>,   G_ij = dP_ij - D_i,   dS_ij = p_ij G_ij
    dT_ij = c_ij dS_ij,   c_ij = sech^2(t_ij / cap)   (1 without softcap)
    dQ_i  = scale sum_j dT_ij k_j,   dK_j = scale sum_i dT_ij q_i,   dV_j = sum_i p_ij f_ij dO_i

A legitimate kernel perturbs each weight independently by a relative ``rho_ij = expm1(delta_ij)
+ eps(u)`` (score errors; P rounded to u), after which the weights are renormalised: to first
order ``p'_j = p_j (1 + e_j - e_bar)``, ``e_bar = sum_k p_k e_k``. Since ``sum_j p_j G_j = 0``,
the softmax backward at p' moves dQ *exactly* by

    scale sum_j p_j e_j G_j (c_j k_j - k~_i) - e_bar dQ_i,     k~_i = sum_j c_j p_j k_j

-- centred on k~ (a uniform perturbation of the weights changes nothing) plus a relative
shift of dQ itself. Hence, with walk(.) the random-walk bound of :func:`.tolerance._walk`
(worst case for few terms, C_SIGMA sqrt(sum t^2) for many) and ``e_bar <= E_i =
walk_j(p_ij rho_ij)``:

    e_dP_ij = eps(u) |dP_ij| + sqrt(Dv) eps(acc) f_ij sum_d |dO_id v_jd|     dP rounded, summed
    e_D_i   = walk_d(|dO_id| R_id) + sqrt(Dv) eps(acc) sum_d |dO_id o_id|   D from the rounded O
              + |D_i| walk_j(eps(u) p_ij) + walk_j(p_ij e_dP_ij)            ... or from sum p dP
    Y_i     = walk_j(p_ij rho_ij |G_ij|)              bound on |sum_j p_j e_j G_j|
    e_dS_ij = p_ij ((rho_ij + E_i) |G_ij| + Y_i + e_dP_ij + e_D_i) + eps(u) |dS_ij|
    e_dT_ij = c_ij e_dS_ij + |dS_ij| |c'_ij| delta_ij,   |c'| = 2 |tanh(t / cap)| c / |cap|

    w_dQ_id = |scale| [walk_j(p rho |G| |c_ij k_jd - k~_id|) + walk_j(c p e_dP |k_jd|)
                       + e_D_i |k~_id| + walk_j(|dS| |c'| delta |k_jd|)
                       + 2 eps(u) walk_j(|dT_ij k_jd|) + sqrt(n_i) eps(acc) sum_j |dT_ij k_jd|]
              + E_i |dQ_id| + eps(u) |dQ_id|
    w_dK_jd = sum_{h in group} |scale| [walk_i(e_dT_ij |q_id|) + 2 eps(u) walk_i(|dT_ij q_id|)
                                        + sqrt(m_j) eps(acc) sum_i |dT_ij q_id|] + eps(u) |dK_jd|
    w_dV_jd = sum_{h in group} [walk_i(p_ij f_ij (rho_ij + E_i) |dO_id|)
                                + sqrt(m_j) eps(acc) sum_i p_ij f_ij |dO_id|] + eps(u) |dV_jd|
    w_dbias = walk over the broadcast axes of e_dS                      + eps(u) |dbias|
    w_dsink = walk_{b,i}(p_sink_i (E_i |D_i| + e_D_i))                  + eps(u) |dsink|

R_id is the rounding part of the forward model's output error (P and o rounded to u, sums in
acc); ``2 eps(u)`` covers dT rounded to u before the products and q, k pre-scaled by
sqrt(scale) and rounded; n_i / m_j count the kept keys of row i / the rows that keep key j.
Each gradient is then judged as the forward output is (spec 5.2): per element against
``F_ELEMENT * w`` and in weighted RMS against refmask's naive same-dtype gradient.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from .tolerance import (
    ACCUMULATION,
    EPS,
    TINY,
    ForwardModel,
    _case_terms,
    _centred_sums,
    _score_error,
    _walk,
    case_forward_model,
)

if TYPE_CHECKING:
    from refmask.case import Case


def _row_scale(x: np.ndarray) -> np.ndarray:
    """The largest entry of each row of ``x`` >= 0 (1 for an all-zero row), as a column: the
    terms of a walk are divided by it before they are squared, so that a row of tiny terms
    (weights of 1e-200) keeps its root instead of underflowing to 0."""
    top = x.max(axis=-1, keepdims=True, initial=0.0)
    return np.where(top > 0, top, 1.0)


def _walk_product(weight: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``walk_j(weight_ij |values_jd|)`` for every (i, d): weight (R, T) >= 0, values (T, D)."""
    top, size = _row_scale(weight), max(float(np.abs(values).max(initial=0.0)), 1e-300)
    unit = weight / top
    return _walk(unit @ np.abs(values), np.sqrt(unit ** 2 @ (values / size) ** 2) * size) * top


def _row_walk(terms: np.ndarray) -> np.ndarray:
    """``walk_j(terms_ij)`` for every row i of non-negative terms (R, T)."""
    top = _row_scale(terms)
    unit = terms / top
    return _walk(unit.sum(axis=-1), np.sqrt((unit ** 2).sum(axis=-1))) * top[:, 0]


def _centred_walk(spread: np.ndarray, factor: np.ndarray, keys: np.ndarray,
                  centre: np.ndarray) -> np.ndarray:
    """``walk_j(spread_ij |factor_ij keys_jd - centre_id|)`` for every (i, d)."""
    top = _row_scale(spread)
    total, squares = _centred_sums(*(np.ascontiguousarray(x) for x in (
        spread / top, factor, keys, centre)))
    return _walk(total, np.sqrt(squares)) * top


def _reduced_walk(terms: np.ndarray, shape: tuple) -> np.ndarray:
    """``walk`` of ``terms`` (B, Hq, Tq, Tk) >= 0 over the axes a bias of ``shape`` was
    broadcast along (leading axes it lacks and axes where it has size 1)."""
    lead = terms.ndim - len(shape)
    flat = terms.reshape((-1,) + terms.shape[lead:]) if lead else terms[None]
    axes = (0,) + tuple(a + 1 for a, n in enumerate(shape) if n == 1 and flat.shape[a + 1] != 1)
    top = flat.max(axis=axes, keepdims=True, initial=0.0)
    top = np.where(top > 0, top, 1.0)
    unit = flat / top
    walk = _walk(unit.sum(axis=axes, keepdims=True),
                 np.sqrt((unit ** 2).sum(axis=axes, keepdims=True))) * top
    return walk[0]


def _weight_change(p: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """The bound on |p'_ij - p_ij| when every score moves by at most delta_ij (R, T):
    ``p_j expm1(delta_j)`` where that is small, never more than the exact range

        p'_j in [d_j / (d_j + sum_{k != j} u_k + s), u_j / (u_j + sum_{k != j} d_k + s)]

    with u = p e^delta, d = p e^-delta and s the sink's weight -- a row whose winner is far
    ahead keeps it whatever its score errors (large-magnitude rows in bfloat16, where delta
    reaches 10 and a first-order bound would exceed 1)."""
    if p.size == 0:
        return np.zeros(p.shape)
    delta = np.minimum(delta, 700.0)
    sink = np.clip(1.0 - p.sum(axis=-1, keepdims=True), 0.0, 1.0)
    up, down = p * np.exp(delta), p * np.exp(-delta)

    def others(terms):
        """sum_{k != j} terms_k + s, without cancellation at the row's largest term."""
        total = terms.sum(axis=-1, keepdims=True) + sink
        top = terms.argmax(axis=-1)[:, None]
        rest = np.where(np.arange(terms.shape[-1]) == top, 0.0, terms).sum(
            axis=-1, keepdims=True) + sink
        return np.where(np.arange(terms.shape[-1]) == top, rest,
                        np.maximum(total - terms, 0.0))

    with np.errstate(invalid="ignore", divide="ignore"):
        high = np.where(up > 0, up / (up + others(down)), 0.0)
        low = np.where(down > 0, down / (down + others(up)), 0.0)
    exact = np.maximum(high - p, p - low)
    return np.minimum(p * np.expm1(delta), np.maximum(exact, 0.0))


def _head_errors(p, factor, q, k, v, d_out, out, lse, *, scale, softcap, additive, eps,
                 eps_acc, tiny_acc) -> dict:
    """The error terms of one (b, h) (module docstring): the walks of w_dQ without its
    relative shift, the per-head parts of w_dK and w_dV, e_dS, the shift E_i (with the saved
    LSE's gamma_i), and the sink term p_sink_i (E_i |D_i| + e_D_i); p, factor (Tq, Tk), q
    (Tq, Dqk), k (Tk, Dqk), v (Tk, Dv), d_out, out (Tq, Dv), lse (Tq,)."""
    delta = np.where(p > 0, _score_error(q, k, scale, softcap, additive, eps, eps_acc), 0.0)
    kept_keys, kept_rows = (p > 0).sum(axis=-1), (p > 0).sum(axis=0)
    pf = p * factor
    d_p = factor * (d_out @ v.T)
    row_dot = (d_out * out).sum(axis=-1)                                     # D_i
    g = d_p - row_dot[:, None]
    ds = p * g
    c, c_error = np.ones_like(p), np.zeros_like(p)
    if softcap is not None:
        tanh_t = np.tanh(scale * (q @ k.T) / softcap)
        c = 1.0 - tanh_t ** 2
        # sech^2 at the kernel's score (off by delta), computed in acc as 1 - tanh^2
        c_error = 2.0 * np.abs(tanh_t) * c / abs(softcap) * delta + 3 * eps_acc
    dt = c * ds
    perturb = np.where(p > 0, _weight_change(p, delta) + eps * p + tiny_acc, 0.0)
    gamma = np.where(kept_keys > 0, eps_acc * (2 * np.abs(lse) + np.sqrt(kept_keys) + 2), 0.0)
    shift = _row_walk(perturb) + gamma                                        # E_i
    e_dp = eps * np.abs(d_p) + math.sqrt(v.shape[1]) * eps_acc * factor * (
        np.abs(d_out) @ np.abs(v).T)
    magnitude = pf @ np.abs(v)
    rounding = eps * np.abs(out) + _walk(eps * magnitude, eps * np.sqrt(pf ** 2 @ v ** 2)) + (
        np.sqrt(kept_keys)[:, None] * eps_acc * magnitude)                   # R_id
    e_d = (_row_walk(np.abs(d_out) * rounding)
           + math.sqrt(v.shape[1]) * eps_acc * np.abs(d_out * out).sum(axis=-1)
           + np.abs(row_dot) * (_row_walk(eps * p) + gamma) + _row_walk(p * e_dp))
    y = _row_walk(perturb * np.abs(g))
    e_ds = (perturb + p * shift[:, None]) * np.abs(g) + p * (
        y[:, None] + e_dp + e_d[:, None]) + eps * np.abs(ds)
    k_tilde = (c * p) @ k
    dq = abs(scale) * (
        _centred_walk(perturb * np.abs(g), c, k, k_tilde) + _walk_product(c * p * e_dp, k)
        + e_d[:, None] * np.abs(k_tilde) + _walk_product(np.abs(ds) * c_error, k)
        + 2 * eps * _walk_product(np.abs(dt), k)
        + np.sqrt(kept_keys)[:, None] * eps_acc * (np.abs(dt) @ np.abs(k)))
    dk = abs(scale) * (
        _walk_product((c * e_ds + np.abs(ds) * c_error).T, q)
        + 2 * eps * _walk_product(np.abs(dt).T, q)
        + np.sqrt(kept_rows)[:, None] * eps_acc * (np.abs(dt).T @ np.abs(q)))
    dv = (_walk_product(((perturb + p * shift[:, None]) * factor).T, d_out)
          + np.sqrt(kept_rows)[:, None] * eps_acc * (pf.T @ np.abs(d_out)))
    sink = np.where(kept_keys > 0, np.clip(1.0 - p.sum(axis=-1), 0.0, 1.0), 0.0)
    return {"dq": dq, "dk": dk, "dv": dv, "ds": e_ds, "shift": shift,
            "sink": sink * (shift * np.abs(row_dot) + e_d)}


def gradient_model(*, q: np.ndarray, k: np.ndarray, v: np.ndarray, probs: np.ndarray,
                   dropout_factor: np.ndarray | None, scale: float, softcap: float | None,
                   additive: np.ndarray | None, d_out: np.ndarray, out: np.ndarray,
                   lse: np.ndarray, golden: dict, kv_heads: int, dtype: str,
                   query_scale: np.ndarray | None = None) -> dict:
    """``{name: w}`` for the gradients in ``golden`` (dq, dk, dv, dbias, dsinks; module
    docstring), float64.

    q (B, Hq, Tq, Dqk) as the scores read it (after a per-query temperature); k, v
    (B, Hq, Tk, D) with the kv heads expanded; probs (B, Hq, Tq, Tk) the golden weights before
    dropout (a sink's weight is ``1 - sum_j p_ij`` on rows that keep a key); dropout_factor
    and additive (|bias| + |alibi|) (B, Hq, Tq, Tk) or None; d_out, out (B, Hq, Tq, Dv); lse
    (B, Hq, Tq); golden: the golden gradients (dq like q, dk and dv with Hkv heads, dbias in
    the bias's shape, dsinks (Hq,)); query_scale (Tq,): the temperature tau, dq = tau * (the
    gradient of the q the scores read)."""
    eps, eps_acc = EPS[dtype], EPS[ACCUMULATION[dtype]]
    batch, heads, q_len, qk_dim = q.shape
    group = max(1, heads // max(1, kv_heads))
    w_dq = np.zeros(q.shape)
    dq_shift = np.zeros(q.shape[:3])
    w_dk = np.zeros((batch, kv_heads) + k.shape[2:])
    w_dv = np.zeros((batch, kv_heads) + v.shape[2:])
    e_ds = np.zeros(probs.shape)
    sink = np.zeros((heads, batch, q_len))
    lse = np.where(np.isfinite(lse), lse, 0.0)
    out = np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
    for b, h in np.ndindex(batch, heads):
        p = np.nan_to_num(probs[b, h])
        terms = _head_errors(
            p, np.ones_like(p) if dropout_factor is None else dropout_factor[b, h],
            q[b, h], k[b, h], v[b, h], d_out[b, h], out[b, h], lse[b, h], scale=scale,
            softcap=softcap, additive=None if additive is None else additive[b, h], eps=eps,
            eps_acc=eps_acc, tiny_acc=TINY[ACCUMULATION[dtype]])
        w_dq[b, h], dq_shift[b, h] = terms["dq"], terms["shift"]
        w_dk[b, h // group] += terms["dk"]
        w_dv[b, h // group] += terms["dv"]
        e_ds[b, h], sink[h, b] = terms["ds"], terms["sink"]
    if query_scale is not None:
        w_dq = w_dq * np.abs(query_scale)[None, None, :, None]
    weights = {"dq": w_dq + dq_shift[..., None] * np.abs(golden["dq"]), "dk": w_dk, "dv": w_dv}
    if "dbias" in golden:
        weights["dbias"] = _reduced_walk(e_ds, np.shape(golden["dbias"]))
    if "dsinks" in golden:
        weights["dsinks"] = _row_walk(sink.reshape(heads, -1))
    floor = eps * TINY[dtype]   # rounding into the subnormals of u
    return {name: weights[name] + eps * np.abs(golden[name]) + floor
            for name in golden if name in weights}


def case_gradient_model(case: Case, inputs: dict, golden: dict, terms: dict) -> dict:
    """:func:`gradient_model` of a conformance case: ``terms`` from
    :func:`.tolerance._case_terms`, the upstream gradient and temperature from the case's
    inputs, the golden out and gradients from ``golden`` (BHTD)."""
    from refmask.adapters.common.translate import float64_inputs
    from refmask.case import GRAD_NAMES, to_bhtd

    values = float64_inputs(inputs)
    grads = {name: golden[name] for name in GRAD_NAMES if name in golden}
    if not grads:
        return {}
    return gradient_model(**terms, d_out=to_bhtd(case, values["d_out"]), out=golden["out"],
                          lse=golden["lse"], golden=grads, kv_heads=case.kv_heads, dtype=case.dtype,
                          query_scale=values.get("query_scale"))


def alternative_gradient_model(case: Case, inputs: dict, changes: dict,
                               grads: dict) -> dict:
    """:func:`gradient_model` of the gradients ``grads`` (BHTD float64) of an alternative
    computation -- keyword arguments ``changes`` of refmask.attention replacing the case's --
    with the alternative's own weights, output and LSE (an empty row under "uniform" weighs
    every key, where the spec's weighs none)."""
    terms, result = _case_terms(case, inputs, changes)
    golden = {"out": np.asarray(result.out, np.float64), "lse": np.asarray(result.lse,
                                                                              np.float64),
              **grads}
    with np.errstate(all="ignore"):
        return case_gradient_model(case, inputs, golden, terms)


def case_error_model(case: Case, inputs: dict, golden: dict, *, grads: bool) -> ForwardModel:
    """The forward model of the case (:func:`.tolerance.case_forward_model`) with, when
    ``grads``, the gradient model of the golden gradients ``golden`` holds in its ``grads``;
    the exact float64 weights are computed once for both."""
    terms, _ = _case_terms(case, inputs)
    model = case_forward_model(case, inputs, golden, terms=terms)
    if not grads:
        return model
    with np.errstate(all="ignore"):
        weights = case_gradient_model(case, inputs, golden, terms)
    return ForwardModel(model.out, model.lse, model.scores, weights)
