"""Token masking: refmask.tokens against HF DataCollatorForLanguageModeling, and the judge's
calibration (false-alarm rate of the reference, detection rate of skewed maskers).

    python benchmarks/masking.py speed          tokens/s, refmask vs HF, one run, same batch
    python benchmarks/masking.py calibration    false alarms and detections over many seeds

Speed: both mask the same (B, T) batch of random ids with [CLS]/[SEP] and right padding,
BERT defaults (15 %, 80/10/10), the HF collator's ``torch_mask_tokens`` given the
``special_tokens_mask`` (what ``return_special_tokens_mask=True`` tokenizers feed it) and
the full collator call (collation + masking); refmask's ``mask_tokens`` on the NumPy array
and on the torch tensor. Best of 7 repetitions after a warm-up; tokens/s = B * T / time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

VOCAB, PAD, CLS, SEP, MASK, UNK = 100, 0, 1, 2, 3, 4


def _best(fn, repeat=7):
    fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def speed(batch: int, length: int) -> dict:
    import torch
    from transformers import DataCollatorForLanguageModeling

    from refmask.adapters.tokens.hf import tokenizer
    from refmask.tokens import mask_tokens

    torch.set_num_threads(2)
    gen = np.random.default_rng(0)
    ids = gen.integers(5, VOCAB, size=(batch, length))
    ids[:, 0] = CLS
    for b in range(batch):
        end = length - (b * 13) % (length // 4)
        ids[b, end - 1] = SEP
        ids[b, end:] = PAD
    special = np.isin(ids, [PAD, CLS, SEP, MASK, UNK]).astype(np.int64)
    collator = DataCollatorForLanguageModeling(tokenizer(), mlm_probability=0.15, seed=0)
    collator.create_rng()
    tids, tspecial = torch.asarray(ids), torch.asarray(special)
    examples = [{"input_ids": row, "special_tokens_mask": s}
                for row, s in zip(ids.tolist(), special.tolist(), strict=True)]
    common = dict(seed=0, epoch=0, example_ids=range(batch), mask_id=MASK, vocab_size=VOCAB,
                  special_ids=(CLS, SEP, MASK, UNK), pad_id=PAD)
    times = {
        "hf torch_mask_tokens": _best(lambda: collator.torch_mask_tokens(
            tids.clone(), special_tokens_mask=tspecial)),
        "hf collator call": _best(lambda: collator([dict(e) for e in examples])),
        "refmask numpy": _best(lambda: mask_tokens(ids, **common)),
        "refmask torch": _best(lambda: mask_tokens(tids, **common)),
    }
    tokens = batch * length
    return {"batch": batch, "length": length,
            "tokens_per_s": {k: tokens / v for k, v in times.items()},
            "ratio_vs_hf_masking": {k: times["hf torch_mask_tokens"] / v
                                    for k, v in times.items()}}


def calibration(seeds: int, alpha: float) -> dict:
    from refmask.conformance.masking import MaskingSpec, check_masker, reference_masker

    spec = MaskingSpec()
    spans = MaskingSpec(spans=(0.2, 10))
    alarms = {
        "bernoulli": (reference_masker(spec), spec),
        "exact_count": (reference_masker(spec, selection="exact_count"), spec),
        "whole_word": (reference_masker(MaskingSpec(whole_word=True)),
                       MaskingSpec(whole_word=True)),
        "spans": (reference_masker(spans), spans),
    }
    # skewed maskers: the reference generator with skewed parameters, judged by the spec
    skews = {
        "rate 0.12": (reference_masker(MaskingSpec(rate=0.12)), spec),
        "split 90/5/5": (reference_masker(MaskingSpec(mask_rate=0.9, random_rate=0.05)), spec),
        "spans mean 2.80 (q=0.337)": (reference_masker(MaskingSpec(spans=(0.337, 10))), spans),
    }
    out = {"seeds": seeds, "alpha": alpha, "false_alarms": {}, "detections_at_1e-3": {}}
    for name, (masker, declared) in alarms.items():
        out["false_alarms"][name] = sum(
            not check_masker(masker, declared, seed=s, alpha=alpha).passed
            for s in range(seeds))
    for name, (masker, declared) in skews.items():
        out["detections_at_1e-3"][name] = sum(
            not check_masker(masker, declared, seed=s).passed for s in range(seeds // 4))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["speed", "calibration"])
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--alpha", type=float, default=0.05)
    args = parser.parse_args(argv)
    if args.what == "speed":
        for batch, length in ((32, 128), (64, 512), (256, 512)):
            print(json.dumps(speed(batch, length)))
    else:
        print(json.dumps(calibration(args.seeds, args.alpha)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
