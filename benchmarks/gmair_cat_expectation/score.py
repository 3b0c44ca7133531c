"""1,000-scene scores of the two cat_expectation runs, and the clusters figure (before / after)."""
import json, sys
import torch
sys.path.insert(0, "experiments")
from gmair_clustering import plot_clusters
from ppl_scenes import MultiMNIST
from ppl_scenes.infer.evaluate import evaluate_detection, matched_codes
from ppl_scenes.runs import load

torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
base = "benchmarks/gmair_cat_expectation"
t = MultiMNIST(1000, split="test", seed=1, canvas_size=64, digit_size=20, num_digits=[1, 5])
models = {}
for name in ("continued", "scratch"):
    m = models[name] = load(f"{base}/{name}/run")
    record = {**evaluate_detection(m, t), "steps": m.step}
    (open(f"{base}/{name}/eval_1000.json", "w")).write(json.dumps(record, indent=1) + "\n")
    print(name, json.dumps(record))
before = load("benchmarks/gmair_exact_cat_kl/run")
matched = {
    f"one relaxed sample, {before.step:,} steps": matched_codes(before, t, max_scenes=None),
    f"summed over z_cat, {models['continued'].step:,} steps": matched_codes(models["continued"], t, max_scenes=None),
}
print(plot_clusters(matched, __import__("pathlib").Path(f"{base}/clusters.png")))
