"""1,000-scene scores of the two cat_expectation runs, and the clusters figure (before / after).

Run from the repository root: ``python experiments/gmair_cat_expectation_score.py [torch threads]``.
The kept runs hold checkpoints of the release before safe run directories: convert them once with
``ppl-scenes upgrade benchmarks/gmair_cat_expectation/continued/run`` (and ``.../scratch/run``,
``benchmarks/gmair_exact_cat_kl/run``).
"""

import json
import sys
from pathlib import Path

import torch
from gmair_clustering import plot_clusters

from ppl_scenes import MultiMNIST, load
from ppl_scenes.metrics import evaluate_detection, matched_codes

torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
base = Path("benchmarks/gmair_cat_expectation")
test_set = MultiMNIST(1000, split="test", seed=1, canvas_size=64, digit_size=20, num_digits=[1, 5])
models = {}
for name in ("continued", "scratch"):
    model = models[name] = load(base / name / "run")
    record = {**evaluate_detection(model, test_set), "steps": model.step}
    (base / name / "eval_1000.json").write_text(json.dumps(record, indent=1) + "\n")
    print(name, json.dumps(record))
before, after = load("benchmarks/gmair_exact_cat_kl/run"), models["continued"]
matched = {
    f"one relaxed sample, {before.step:,} steps": matched_codes(before, test_set, max_scenes=None),
    f"summed over z_cat, {after.step:,} steps": matched_codes(after, test_set, max_scenes=None),
}
print(plot_clusters(matched, base / "clusters.png"))
