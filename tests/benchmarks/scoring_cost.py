"""What scoring a pair costs next to visualising it, in model evaluations (issue 9). Printed, never asserted.

For each model: the scoring of one pair is run for real on random sample sets (S = levels x seeds per class),
as an audit runs it and with the factor probes an audit may ask for (whose cost grows with the square of the
classes they sample, ``evidence.PROBE_OTHER_CLASSES``), and its evaluations counted (``workers.engine.cost``); a
second pair of the same audit then shows what the probes cost once the first pair's levers are shared
(``factor_probes.LeverCache``: on a model of up to PROBE_OTHER_CLASSES + 2 classes, nothing more); the
visualisation of the pair's two classes is counted on a short run and scaled to the audit's steps (every step
evaluates each row once with an input gradient; rows that end below softmax 0.5 and are retried would add to it,
and are left out, as in the issue's figure).

    python tests/benchmarks/scoring_cost.py [--steps 128] [--levels 3] [--seeds 3] [--localisation attribution]
                                            [--models reference r2plus1d]

Models: the reference two-stream net (4 frames, 32 px) and torchvision's r2plus1d_18 at 3x8x56x56, random
weights (cost does not depend on them).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from workers.audit.evidence import PROBE_OTHER_CLASSES, EvidenceConfig, measure_pair_evidence
from workers.engine.architectures import build_architecture
from workers.engine.config import VisualizationConfig
from workers.engine.cost import count_evaluations
from workers.engine.manifest import InputSpec
from workers.engine.reference.model import TinyTwoStream
from workers.engine.visualize import UnitRequest, visualize


def models() -> list[tuple[str, torch.nn.Module, list[InputSpec], int]]:
    ref_specs = [InputSpec(name="appearance", modality="rgb", layout="NCTHW", shape=[3, 4, 32, 32]),
                 InputSpec(name="motion", modality="flow", layout="NCTHW", shape=[2, 4, 32, 32])]
    tv_specs = [InputSpec(name="clip", modality="rgb", layout="NCTHW", shape=[3, 8, 56, 56])]
    return [("reference", "reference twostream (4x32x32)", TinyTwoStream(num_classes=8, frames=4, size=32).eval(),
             ref_specs, 8),
            ("r2plus1d", "r2plus1d_18 (3x8x56x56)", build_architecture("torchvision.r2plus1d_18", 10).eval(),
             tv_specs, 10)]


def sample_set(specs: list[InputSpec], n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {s.name: rng.normal(0, 0.5, size=(n, s.base_channels, s.num_frames, s.height, s.width)).astype(np.float32)
            for s in specs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=128, help="the audit's visualisation steps")
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--localisation", nargs="+", choices=("attribution", "exhaustive"), default=["attribution"])
    parser.add_argument("--models", nargs="+", choices=("reference", "r2plus1d"), default=["reference", "r2plus1d"])
    args = parser.parse_args()
    torch.manual_seed(0)
    per_class = args.levels * args.seeds
    for key, name, model, specs, n_classes in models():
        if key not in args.models:
            continue
        classes = [f"c{i}" for i in range(n_classes)]
        probe_steps = 2
        with count_evaluations() as probe:
            visualize(model, specs, [UnitRequest(target=i % 2, kappa=1.0, seed=i) for i in range(2 * per_class)],
                      VisualizationConfig(steps=probe_steps, retry_below_probability=0.0), device="cpu")
        rows = 2 * per_class
        assert probe.gradient_rows == rows * probe_steps, probe  # the counting this scaling relies on
        visualise_fe = rows * args.steps * 3 + rows
        print(f"\n{name}: visualising a pair = {rows} rows x {args.steps} steps -> {visualise_fe:,} "
              f"forward-equivalents (counted {probe.gradient_rows} gradient rows at {probe_steps} steps)")
        for mode in args.localisation:
            config = EvidenceConfig(localisation=mode)   # an audit's default: no factor probes
            with_probes = EvidenceConfig(localisation=mode, probe_other_classes=PROBE_OTHER_CLASSES)
            vis_a, vis_b = sample_set(specs, per_class, 1), sample_set(specs, per_class, 2)
            # the pair's null scans (``ranking.null_pairs``): each class against ``null_partners`` other classes
            nulls = [(x, f"c{2 + 2 * j + k}") for j, x in enumerate(("c0", "c1")) for k in range(config.null_partners)]
            # and the global swaps alone against every other class (``ranking.factor_null_pairs``), as in an audit
            # whose pairs hold all the model's classes
            swaps = {pair: [(x, c) for x in pair for c in classes if c not in pair and (x, c) not in scans]
                     for pair, scans in ((("c0", "c1"), nulls),
                                         (("c2", "c3"), [("c2", "c0"), ("c2", "c1"), ("c3", "c4"), ("c3", "c5")]))}
            null_vis = {c: sample_set(specs, per_class, 3 + i) for i, c in enumerate(classes[2:])}
            shared: dict = {}
            nulls_text = f"{len(nulls)} null scans and {len(swaps[('c0', 'c1')])} null swaps"
            for label, pair, pairs, cfg, cache in (
                    ("without its null", ("c0", "c1"), [], config, None),
                    (f"with {nulls_text}", ("c0", "c1"), nulls, config, None),
                    (f"with {nulls_text} and the factor probes", ("c0", "c1"), nulls, with_probes, shared),
                    (f"a second pair of the audit, {nulls_text}, the factor probes' levers shared",
                     ("c2", "c3"), [("c2", "c0"), ("c2", "c1"), ("c3", "c4"), ("c3", "c5")],
                     with_probes, shared)):
                t0 = time.perf_counter()
                pair_vis = (vis_a, vis_b) if pair == ("c0", "c1") else (null_vis["c2"], null_vis["c3"])
                evidence = measure_pair_evidence(model, specs, classes, *pair, *pair_vis, device="cpu",
                                                 config=cfg, null_pairs=pairs, swap_null_pairs=swaps[pair] if pairs
                                                 else (), null_vis={**null_vis, "c0": vis_a, "c1": vis_b},
                                                 probe_cache=cache)
                seconds = time.perf_counter() - t0
                c = evidence.cost
                print(f"  scoring ({mode}, {label}): {c['evaluations']:,} evaluations ({c['forward_rows']:,} forward, "
                      f"{c['gradient_rows']:,} with input gradient) = {c['forward_equivalents']:,} "
                      f"forward-equivalents = {c['forward_equivalents'] / visualise_fe:.3f}x visualising; "
                      f"{seconds:.1f}s on this CPU")


if __name__ == "__main__":
    main()
