"""Judging the outputs beyond out and lse that a case asks for (spec 3.9, 5.2 "Scores") and
the per-query temperature (spec 3.2.3): what the runner refuses, what it recomputes under an
alternative, and the one named convention of the score stages.

    scores_unsupported(adapter, case)      the case asks for a stage the adapter cannot return
    temperature_unsupported(adapter, case) the case has a temperature the adapter cannot apply
    missing_scores(case, output)           stages the backend should have returned and did not
    alternative_scores(case, inputs, ...)  the stages under a change of attention's arguments
    masked_scores_convention(...)          "masked_scores=lowest": dropped pairs of the masked
                                           stage hold the dtype's lowest finite value

``masked_scores=lowest`` (kind policy): the ``masked`` stage holds the case dtype's lowest
finite value (float32 -3.40282e38, float16 -65504, ...) where the spec says -inf. Measured on
onnxruntime 1.31.1 (``qk_matmul_output_mode=2``); the ONNX reference implementation adds
-inf. It changes nothing else: the probabilities and the output are those of -inf.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from refmask.adapters import Adapter
from refmask.adapters.common import Output
from refmask.case import Case, numpy_dtype, score_arrays, score_output_name

from .tolerance import ForwardModel, check_forward

#: The named conventions of the score stages: name -> description (kind "policy").
SCORE_CONVENTIONS = {
    "masked_scores=lowest": "the masked score stage (ONNX qk_matmul_output mode 2) holds the "
                            "dtype's lowest finite value instead of -inf at dropped pairs "
                            "(onnxruntime)",
}

#: refmask.attention keyword arguments an alternative may change -> the Case field.
_CASE_FIELDS = {"mask": "mask", "scale": "scale", "empty_rows": "empty_rows", "alibi": "alibi",
                "softcap": "softcap"}


def scores_unsupported(adapter: Adapter, case: Case) -> str | None:
    """Why the adapter cannot return the score stages the case asks for, or None."""
    missing = [stage for stage in case.scores if stage not in adapter.scores]
    if not missing:
        return None
    can = f" (it returns {sorted(adapter.scores)})" if adapter.scores else ""
    return (f"{adapter.name}: returns no score stages {missing}, which the case asks for as "
            f"outputs{can}")


def temperature_unsupported(adapter: Adapter, case: Case) -> str | None:
    """Why the adapter cannot apply the case's per-query temperature, or None."""
    if case.query_scale is None or adapter.temperature:
        return None
    return (f"{adapter.name}: no per-query temperature (query_scale, spec 3.2.3; Llama 4 "
            "multiplies q before the attention call, which is not the backend's computation)")


def missing_scores(case: Case, output: Output) -> list:
    """Score outputs the case asks for that the backend did not return."""
    returned = output.scores or {}
    return [name for name in map(score_output_name, case.scores) if name not in returned]


def alternative_scores(case: Case, inputs: dict, changes: dict) -> dict | None:
    """The float64 score stages of the case under an alternative that changes only
    refmask.attention keyword arguments (mask, scale, empty_rows, alibi, softcap, or drops
    the sinks); None for any other alternative."""
    if not set(changes) <= set(_CASE_FIELDS) | {"sinks"} or changes.get(
            "sinks", "dropped") != "dropped":
        return None
    from refmask.adapters.common.translate import float64_inputs

    values = float64_inputs(inputs)
    try:
        changed = replace(case, **{_CASE_FIELDS[name]: value for name, value in changes.items()
                                   if name in _CASE_FIELDS})
        if "sinks" in changes:
            values.pop("sinks", None)
            changed = replace(changed, sinks=False)
        return score_arrays(changed, values)
    except (ValueError, TypeError, NotImplementedError):
        return None


def _lowest(dtype: str) -> float:
    if dtype == "bfloat16":
        import ml_dtypes

        return float(ml_dtypes.finfo(ml_dtypes.bfloat16).min)
    return float(np.finfo(numpy_dtype(dtype)).min)


LOWEST = "masked_scores=lowest"


def lowest_golden(case: Case, masked: np.ndarray) -> np.ndarray:
    """The masked stage under ``masked_scores=lowest``: -inf replaced by the dtype's lowest
    finite value."""
    return np.where(masked == -np.inf, _lowest(case.dtype), masked)


def lowest_in_effect(case: Case, output: Output, golden: dict) -> bool:
    """Whether the backend's masked stage follows ``masked_scores=lowest`` visibly: the
    golden stage has -inf entries and the returned one has none but holds the lowest value."""
    name = score_output_name("masked")
    if name not in golden or (output.scores or {}).get(name) is None:
        return False
    returned = np.asarray(output.scores[name], np.float64)
    return bool((golden[name] == -np.inf).any() and not (returned == -np.inf).any()
                and (returned == _lowest(case.dtype)).any())


def recheck_lowest(case: Case, output: Output, checks: list, golden: dict,
                   model: ForwardModel) -> list:
    """``checks`` with a failing masked-stage check replaced by its check against
    :func:`lowest_golden` when that one passes (for a backend that declares
    ``masked_scores=lowest``)."""
    name = score_output_name("masked")
    result = []
    for check in checks:
        if check.name == name and not check.ok:
            again = check_forward(name, output.scores[name], lowest_golden(case, golden[name]),
                                  None, model.scores[name], case.dtype, aggregate=False)
            check = again if again.ok else check
        result.append(check)
    return result


def masked_scores_convention(case: Case, output: Output, checks: list, golden: dict,
                             model: ForwardModel) -> str | None:
    """``"masked_scores=lowest"`` when the only failing check is the masked stage and it
    passes once the golden -inf entries are replaced by the dtype's lowest finite value;
    else None."""
    name = score_output_name("masked")
    if [c.name for c in checks if not c.ok] != [name]:
        return None
    rechecked = recheck_lowest(case, output, checks, golden, model)
    return LOWEST if all(c.ok for c in rechecked) else None


def scores_explained(case: Case, inputs: dict, output: Output, failed: list,
                     model: ForwardModel, changes: dict, lowest: bool) -> bool:
    """Whether the failing score checks are the stages recomputed under an alternative's
    ``changes`` (with ``masked_scores=lowest`` applied to the masked stage when ``lowest``)."""
    alt = alternative_scores(case, inputs, changes)
    if alt is None:
        return False
    for check in failed:
        candidates = [alt[check.name]]
        if lowest and check.name == score_output_name("masked"):
            candidates.append(lowest_golden(case, alt[check.name]))
        if not any(check_forward(check.name, output.scores[check.name], want, None,
                                 model.scores[check.name], case.dtype, aggregate=False).ok
                   for want in candidates):
            return False
    return True
