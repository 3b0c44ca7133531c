"""Can the saccade model's bound fit one fixed batch? A diagnostic of its learning signal (issue 6).

The saccade model is trained by SVI on its bound (eq. 5) over one fixed batch of ``--batch-size``
cluttered two-digit scenes for ``--steps`` Adam steps, for each combination of ``--proxy-weights``
(the coefficient of the proxy's log-likelihood) and glimpse start (``spread``: the glimpses start on a
grid covering the image and the where-head at zero; ``centre``: all at the centre, random head). A
model that learns at all memorises a few dozen labels quickly; the record holds, per setting, the
label log-likelihood of the batch (the constant predictor's is about -4.8 per scene on two-digit
identification) and the training accuracy at the end, and the curve.

The diagnostic is of the where-head design it was written for (``WHERE_HEAD``: glimpses from a dense
head on ``z_t``, up to half the side, the KL at full weight), not of the attention the model now uses
by default.

Writes under ``--out`` (default ``benchmarks/saccade_fixed_batch``): ``saccade_fixed_batch.json``.

Reproduce the recorded numbers::

    PPL_SCENES_DATA=/path/to/data python experiments/saccade_fixed_batch.py --threads 1
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pyro
import pyro.poutine as poutine
import torch
from _common import apply_threads, command_line, finite, machine, positive_int, write_record
from pyro.infer import Trace_ELBO

from ppl_scenes import ClutteredDigits, VariationalSaccading
from ppl_scenes.data.scenes import image_targets

NAME = "saccade_fixed_batch"
STARTS = {"spread": True, "centre": False}

#: The model's settings when this diagnostic was recorded (before ``where_attention``).
WHERE_HEAD = {"where_attention": False, "max_scale": 0.5, "kl_weight": 1.0}


def build_parser():
    import argparse

    parser = argparse.ArgumentParser(
        prog=f"python experiments/{NAME}.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", default=f"benchmarks/{NAME}", metavar="DIR", help="where the JSON goes")
    parser.add_argument("--steps", type=positive_int, default=200, metavar="N", help="Adam steps")
    parser.add_argument(
        "--batch-size", type=positive_int, default=32, metavar="B", help="scenes in the batch"
    )
    parser.add_argument("--proxy-weights", nargs="+", type=float, default=[1.0, 0.01, 0.001], metavar="W")
    parser.add_argument("--starts", nargs="+", choices=tuple(STARTS), default=list(STARTS))
    parser.add_argument("--log-every", type=positive_int, default=50, metavar="N")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-root", metavar="DIR", help="MNIST root (default: $PPL_SCENES_DATA)")
    parser.add_argument("--threads", type=positive_int, metavar="T", help="torch intra-op threads")
    return parser


def label_log_likelihood(model, x: torch.Tensor, y: torch.Tensor) -> float:
    """``log p(y | glimpses)`` of the batch, the glimpses drawn from the guide."""
    with torch.no_grad():
        guide = poutine.trace(model.guide).get_trace(x, y)
        trace = poutine.trace(poutine.replay(model.model, trace=guide)).get_trace(x, y)
        return float(trace.nodes["y"]["fn"].log_prob(y).sum())


def fit_batch(x, y, start: str, weight: float, args) -> dict:
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    model = VariationalSaccading(**WHERE_HEAD, spread_glimpses=STARTS[start], proxy_weight=weight)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    elbo = Trace_ELBO()
    curve = []
    for step in range(1, args.steps + 1):
        loss = elbo.differentiable_loss(model.model, model.guide, x, y)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        if step % args.log_every == 0 or step == args.steps:
            curve.append(
                {"step": step, "label_log_lik_per_scene": label_log_likelihood(model, x, y) / len(x)}
            )
    accuracy = float((model.parse(x).image_labels == y.long()).all(-1).float().mean())
    return {
        "label_log_lik_per_scene": curve[-1]["label_log_lik_per_scene"],
        "train_accuracy": accuracy,
        "curve": curve,
    }


def main(argv: Sequence[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    apply_threads(args)
    data = ClutteredDigits(args.batch_size, "train", seed=args.seed, root=args.data_root)
    x = torch.stack([data[i][0] for i in range(len(data))])
    y = image_targets("identify", [data[i][1] for i in range(len(data))])
    prior = y.float().mean(0).clamp(1e-6, 1 - 1e-6)
    constant = float(torch.distributions.Bernoulli(probs=prior).log_prob(y.float()).sum(-1).mean())
    results = {
        f"{start}-w{weight:g}": fit_batch(x, y, start, weight, args)
        for start in args.starts
        for weight in args.proxy_weights
    }
    record = {
        "experiment": NAME,
        "command": command_line(NAME, argv),
        "settings": vars(args),
        "machine": machine(),
        "constant_predictor_log_lik_per_scene": constant,
        "results": finite(results),
    }
    write_record(Path(args.out) / f"{NAME}.json", record)
    summary = {k: (round(r["label_log_lik_per_scene"], 2), r["train_accuracy"]) for k, r in results.items()}
    print(json.dumps({"constant": round(constant, 2), "log_lik_and_accuracy": summary}))
    return record


if __name__ == "__main__":
    main()
