"""Write ``BENCHMARKS.md`` from the JSON records under ``benchmarks/`` (issue 34).

    python experiments/report.py            # writes BENCHMARKS.md
    python experiments/report.py --check    # exit 1 and print a diff when BENCHMARKS.md differs
    python experiments/report.py --out F    # writes F instead

Every number in a table of the page is read from a record (``benchmarks/<experiment>/...json``);
the prose beside it is written here, in ``SECTIONS``. Means are over seeds with the *sample*
standard deviation (``statistics.stdev``). A record that a table needs and that is not there is
shown in the page as a missing record (and printed on stderr) rather than stopping the page.

To add a section, append a ``Section`` to ``SECTIONS``: a title, the paper's reference, a short
prose paragraph, a protocol note (what of it predates the protocol), the records whose ``command``
the section shows, and table functions ``(Records) -> str`` built from the helpers below
(``claim_table`` for a headline claim, ``table`` for anything else). The page is deterministic:
no dates, no timings, records read in sorted order. It needs only the standard library.

The story of how each result was reached is in ``benchmarks/HISTORY.md`` (not generated).
"""

from __future__ import annotations

import argparse
import difflib
import json
import statistics
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from _reproduction import seed_spread

ROOT = Path(__file__).resolve().parents[1]
PAGE = "BENCHMARKS.md"


# ---------------------------------------------------------------------------------------------
# Records


class MissingRecord(Exception):
    """A table needs a record that is not under ``benchmarks/``."""


class Records:
    """Reads records relative to a repository root, remembering which were used and which were missing."""

    def __init__(self, root: Path | str = ROOT):
        self.root = Path(root)
        self.used: dict[str, dict] = {}
        self.missing: list[str] = []

    def __call__(self, path: str) -> dict:
        if path not in self.used:
            file = self.root / path
            if not file.is_file():
                if path not in self.missing:
                    self.missing.append(path)
                raise MissingRecord(path)
            self.used[path] = json.loads(file.read_text())
        return self.used[path]

    def exists(self, path: str) -> bool:
        return (self.root / path).is_file()

    def glob(self, pattern: str) -> list[str]:
        return sorted(p.relative_to(self.root).as_posix() for p in self.root.glob(pattern) if p.is_file())


# ---------------------------------------------------------------------------------------------
# Formatting


def f3(x) -> str:
    return "–" if x is None else f"{x:.3f}"


def f4(x) -> str:
    return "–" if x is None else f"{x:.4f}"


def f1(x) -> str:
    return "–" if x is None else f"{x:,.1f}"


def count(x) -> str:
    return "–" if x is None else f"{int(x):,}"


def minutes(seconds) -> str:
    return "–" if seconds is None else f"{seconds / 60:.1f}"


def yes(flag) -> str:
    return "–" if flag is None else ("yes" if flag else "no")


def table(header: Iterable[str], rows: Iterable[Iterable]) -> str:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def lower_is_better(metric: str) -> bool:
    return any(word in metric.lower() for word in ("rmse", "mae", "error", "loss", "mse"))


def meets(value, bar, lower: bool) -> bool | None:
    if value is None or bar is None:
        return None
    return value <= bar if lower else value >= bar


@dataclass
class Claim:
    """One headline metric: its per-seed test values, the bar it is held to and the paper's number."""

    metric: str
    per_seed: list[tuple[int, float]]
    target: float | None = None
    paper: float | None = None
    lower: bool = False
    interval: tuple[float, float] | None = None
    fmt: Callable = f3

    @property
    def mean(self) -> float:
        return statistics.fmean(v for _, v in self.per_seed)

    @property
    def sd(self) -> float | None:
        values = [v for _, v in self.per_seed]
        return statistics.stdev(values) if len(values) >= 2 else None


def claim_table(claims: list[Claim]) -> str:
    """The protocol's headline form: mean ± sample sd over seeds, per seed, interval, bar, paper."""
    rows = []
    for c in claims:
        n = len(c.per_seed)
        ours = c.fmt(c.mean) + (f" ± {c.fmt(c.sd)}" if c.sd is not None else "")
        per_seed = " / ".join(f"{c.fmt(v)} (seed {s})" for s, v in c.per_seed)
        interval = f"[{c.fmt(c.interval[0])}, {c.fmt(c.interval[1])}]" if c.interval else "not recorded"
        bar = "–" if c.target is None else ("≤ " if c.lower else "≥ ") + c.fmt(c.target)
        met = yes(meets(c.mean, c.target, c.lower))
        if c.interval and c.target is not None and c.interval[0] < c.target < c.interval[1]:
            met += " (interval straddles the bar)"
        reached = yes(meets(c.mean, c.paper, c.lower))
        rows.append(
            [
                c.metric,
                ours,
                n,
                per_seed,
                interval,
                bar,
                met,
                c.fmt(c.paper) if c.paper is not None else "–",
                reached,
            ]
        )
    header = [
        "metric",
        "ours: mean ± sd",
        "seeds",
        "per seed",
        "95 % interval",
        "bar",
        "bar met (mean)",
        "paper",
        "paper reached",
    ]
    note = ""
    if any(len(c.per_seed) < 3 for c in claims):
        note = "\n\nFewer than three seeds: not a headline claim under the protocol (rule 3)."
    return table(header, rows) + note


# ---------------------------------------------------------------------------------------------
# Sections


@dataclass
class Section:
    title: str
    paper: str
    prose: str
    protocol: str
    commands: list[str] = field(default_factory=list)
    tables: list[Callable[[Records], str]] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    optional_glob: str | None = None  # the section is left out when no file matches this pattern


def commands_of(record: dict) -> list[str]:
    if "command" in record:
        return [record["command"]]
    return [call["command"] for call in record.get("calls", []) if "command" in call]


# -- SPAIR --------------------------------------------------------------------------------------

RECIPE = "benchmarks/spair_recipe"
RECIPE_SEEDS = [(0, f"{RECIPE}/pend0.5-2thread-s0"), (1, f"{RECIPE}/pend0.5-2thread-s1")]


def spair_headline(r: Records) -> str:
    ink = [(s, r(f"{d}/spair_boxes.json")["chosen_on_validation"]["ink"]["test"]) for s, d in RECIPE_SEEDS]
    return claim_table(
        [
            Claim("AP@0.5 (ink boxes)", [(s, t["ap50"]) for s, t in ink], target=0.95),
            Claim("AP .1:.9 (ink boxes)", [(s, t["ap_spair"]) for s, t in ink], target=0.85),
            Claim("count accuracy", [(s, t["count_accuracy"]) for s, t in ink], target=0.90),
        ]
    )


def spair_boxes_table(r: Records) -> str:
    rows = []
    for seed, d in RECIPE_SEEDS:
        record, steps = r(f"{d}/spair_boxes.json"), r(f"{d}/eval.json")["step"]
        for kind, s in record["chosen_on_validation"].items():
            v, t = s["validation"], s["test"]
            thr = f" ({s['tight_threshold']})" if "tight_threshold" in s else ""
            rows.append(
                [
                    seed,
                    count(steps),
                    kind + thr,
                    f3(v["ap_spair"]),
                    f3(v["count_accuracy"]),
                    f3(t["ap50"]),
                    f3(t["ap_spair"]),
                    f3(t["ap_coco"]),
                    f3(t["count_accuracy"]),
                ]
            )
    return table(
        [
            "seed",
            "steps",
            "boxes (threshold)",
            "val. AP .1:.9",
            "val. count acc.",
            "test AP@0.5",
            "test AP .1:.9",
            "test AP .5:.95",
            "test count acc.",
        ],
        rows,
    )


def spair_recipe_runs(r: Records) -> str:
    rows = []
    for path in r.glob(f"{RECIPE}/*/spair_boxes.json"):
        d = path.rsplit("/", 1)[0]
        config, ink = r(f"{d}/config.json"), r(path)["chosen_on_validation"]["ink"]
        mc, tc = config["model_config"], config["train_config"]
        decay = (
            f"{tc.get('lr_decay_from')} → {tc.get('lr_decay_to')}"
            if tc.get("lr_decay_from") is not None
            else "none"
        )
        rows.append(
            [
                d.rsplit("/", 1)[1],
                config["seed"],
                "×".join(str(c) for c in mc["cell_size"]),
                f"{mc['anchor'][0]:g}",
                mc["pres_prob_end"],
                decay,
                count(r(f"{d}/eval.json")["step"]),
                ink["tight_threshold"],
                f3(ink["validation"]["ap_spair"]),
                f3(ink["test"]["ap50"]),
                f3(ink["test"]["ap_spair"]),
                f3(ink["test"]["count_accuracy"]),
            ]
        )
    return table(
        [
            "run",
            "seed",
            "cell",
            "anchor",
            "`pres_prob_end`",
            "lr decay (from → to)",
            "steps",
            "ink thr.",
            "val. AP .1:.9",
            "test AP@0.5",
            "test AP .1:.9",
            "test count acc.",
        ],
        rows,
    )


def spair_defaults(r: Records) -> str:
    e = r("benchmarks/spair_5digits/eval.json")
    return table(
        ["SPAIR's defaults, where boxes", "steps", "AP@0.5", "AP .1:.9", "count accuracy"],
        [
            [
                "30 minutes, 1 thread",
                count(e["step"]),
                f3(e["ap50"]),
                f3(e["ap_spair"]),
                f3(e["count_accuracy"]),
            ]
        ],
    )


def spair_generalization(r: Records) -> str:
    d = r("benchmarks/spair_generalization/spair_generalization.json")
    v, c = d["variants"]["SPAIR"], d["conncomp"]
    rows = []
    for name, o, mae in [
        ("SPAIR, where boxes", v["overall"], v["count_mae_11_20"]),
        ("SPAIR, tight boxes", v["tight_boxes"]["overall"], v["count_mae_11_20"]),
        ("ConnComp", c["overall"], c["count_mae_11_20"]),
    ]:
        rows.append(
            [name, f3(o["ap_spair"]), f3(o["ap50"]), f3(o["count_accuracy"]), f3(o["count_mae"]), f3(mae)]
        )
    rows.append(["bar (issue 3)", "", "", "", "", "≤ 1.000"])
    return (
        table(["model", "AP .1:.9", "AP@0.5", "count accuracy", "count MAE", "count MAE, 11–20 digits"], rows)
        + f"\n\nSPAIR: {count(v['steps'])} steps, {minutes(v['train_seconds'])} min, one seed; "
        f"{count(v['overall']['num_scenes'])} test scenes."
    )


def spair_scaling(r: Records) -> str:
    cell8 = r("benchmarks/spair_scaling_cell8/spair_scaling.json")["conditions"]
    cell12 = {c["num_digits"]: c for c in r("benchmarks/spair_scaling/spair_scaling.json")["conditions"]}
    rows = []
    for c in cell8:
        old = cell12.get(c["num_digits"])
        rows.append(
            [
                c["num_digits"],
                count(c["steps"]),
                f3(c["spair"]["ap50"]),
                f3(c["spair_tight_boxes"]["ap50"]),
                f3(c["spair"]["ap_spair"]),
                f3(c["spair"]["count_accuracy"]),
                f3(c["conncomp"]["ap50"]),
                f3(old["spair"]["ap50"]) if old else "–",
                yes(c["spair"]["ap50"] >= 0.90),
            ]
        )
    return table(
        [
            "digits",
            "steps (8-px cells)",
            "AP@0.5 where",
            "AP@0.5 tight",
            "AP .1:.9 where",
            "count acc.",
            "ConnComp AP@0.5",
            "AP@0.5 where, 12-px cells",
            "≥ 0.90 (where)",
        ],
        rows,
    )


def spair_atari(r: Records) -> str:
    d = r("benchmarks/spair_atari/spair_atari.json")
    o = d["objects_per_frame"]
    return table(
        ["model", "steps", "minutes", "frames parsed", "objects per frame (min–max)", "mean"],
        [
            [
                "SPAIR",
                count(d["steps"]),
                minutes(d["train_seconds"]),
                len(o["spair"]),
                f"{min(o['spair'])}–{max(o['spair'])}",
                f1(o["spair_mean"]),
            ],
            [
                "ConnComp",
                "",
                "",
                len(o["conncomp"]),
                f"{min(o['conncomp'])}–{max(o['conncomp'])}",
                f1(o["conncomp_mean"]),
            ],
        ],
    )


def spair_lateral(r: Records) -> str:
    d = r("benchmarks/spair_lateral_ablation/spair_lateral_ablation.json")
    rows = [
        [
            name,
            count(v["steps"]),
            f3(v["overall"]["ap_spair"]),
            f3(v["overall"]["ap50"]),
            f3(v["tight_boxes"]["overall"]["ap50"]),
            f3(v["overall"]["count_accuracy"]),
            f3(v["count_mae_11_20"]),
        ]
        for name, v in d["variants"].items()
    ]
    c = d["conncomp"]
    rows.append(
        [
            "ConnComp",
            "",
            f3(c["overall"]["ap_spair"]),
            f3(c["overall"]["ap50"]),
            "",
            f3(c["overall"]["count_accuracy"]),
            f3(c["count_mae_11_20"]),
        ]
    )
    return table(
        ["guide", "steps", "AP .1:.9", "AP@0.5", "AP@0.5 tight", "count accuracy", "count MAE, 11–20"], rows
    )


def spair_speed(r: Records) -> str:
    d = r("benchmarks/spair_speed/spair_speed.json")["results"]
    rows = [
        ["48×48, 4×4 grid, lateral, wavefront (bar ≤ 100)", f1(d["target"]["median_ms"])],
        ["the same, raster order", f1(d["raster"]["median_ms"])],
        ["the same, no lateral connections", f1(d["no_lateral"]["median_ms"])],
    ]
    rows += [
        [
            f"{side}×{side}, lateral, wavefront",
            f1(p["median_ms"]) + f" ({f1(p['ms_per_kilopixel'])} per 1,000 px)",
        ]
        for side, p in d["pixels"].items()
        if side != "48"
    ]
    s = r("benchmarks/spair_stream_speed/spair_stream_speed.json")["conditions"]
    names = {
        "memory": "10,000 scenes in memory",
        "stream": "400,000 generated batch by batch, `keep_freed_memory`",
        "stream_default_malloc": "the same, glibc's default malloc thresholds",
    }
    rows2 = [
        [names.get(k, k), f1(v["median_ms"]) + " (" + ", ".join(f1(x) for x in v["per_run_median_ms"]) + ")"]
        for k, v in s.items()
    ]
    return (
        table(["SVI step, batch 32, 2 threads", "median ms/step"], rows)
        + "\n\n"
        + table(["whole training step, 5-digit recipe, 1 thread", "median ms/step (per run)"], rows2)
    )


# -- Scene generation and the two commands --------------------------------------------------------


def bench_data(r: Records) -> str:
    d = r("benchmarks/bench_data/bench_data.json")
    s = d["scattered_48x48"]
    head = table(
        ["scenes", "seconds (bar < 10)", "scenes/s", "digit bank build, s"],
        [
            [
                count(s["num_scenes"]),
                f"{s['seconds']:.2f}",
                f1(s["scenes_per_s"]),
                f"{d['digit_bank_build_s']:.2f}",
            ]
        ],
    )
    rows = [
        [g, "×".join(str(x) for x in v["image_size"]), f"{v['ms']:.2f}"]
        for g, v in d["generators_ms_per_scene"].items()
    ]
    return head + "\n\n" + table(["generator", "size", "ms/scene"], rows)


def demo(r: Records) -> str:
    """`make demo`: the shipped SPAIR and the demo's own five-minute SPAIR on the same test scenes
    (``demo.json``, written by ``ppl-scenes demo``; an older demo left ``eval.json`` only)."""
    head = ["`make demo`", "steps", "AP@0.5", "AP .1:.9", "count accuracy", "RMSE", "test scenes"]
    if not r.exists("benchmarks/demo/demo.json"):
        e = r("benchmarks/demo/eval.json")
        scores = [f3(e[k]) for k in ("ap50", "ap_spair", "count_accuracy", "rmse")]
        return table(head, [["SPAIR, 5 minutes", count(e["step"]), *scores, count(e["num_scenes"])]])
    d = r("benchmarks/demo/demo.json")
    rows = []
    for label, m, steps in (
        (
            "pretrained SPAIR (preset `{}`, {} CPU min)",
            d["pretrained"],
            d["pretrained"] and d["pretrained"]["steps"],
        ),
        ("the demo's SPAIR (preset `{}`, {} min)", d["yours"], d["yours"]["step"]),
    ):
        if m is None:
            continue
        shown = m.get("cpu_minutes", (d["budget"]["seconds"] or 0) / 60)
        label = label.format(m.get("preset", d["preset"]), f1(shown))
        scores = [f3(m.get(k)) for k in ("ap50", "ap_spair", "count_accuracy", "rmse")]
        rows.append([label, count(steps), *scores, count(d["test_scenes"])])
    machine = d["machine"]
    return (
        table(head, rows) + f"\n\nCommand: `{d['command']}` (seed {d['seed']}; {machine['cpus']} CPUs, "
        f"{machine['torch_threads']} torch threads, torch {machine['torch']})."
    )


# -- GMAIR --------------------------------------------------------------------------------------

GMAIR_BEST = "benchmarks/gmair_cat_expectation/continued"
GMAIR_PAPER = {"ap50": 0.973, "acc": 0.804, "nmi": 0.755}


def gmair_headline(r: Records) -> str:
    e = r(f"{GMAIR_BEST}/eval_1000.json")
    seed = r(f"{GMAIR_BEST}/run/config.json")["seed"]
    base = r("benchmarks/gmair_clustering/gmair_clustering.json")
    b, t = base["results"]["spair_gmm"], base["targets"]
    return claim_table(
        [
            Claim("AP@0.5", [(seed, e["ap50"])], target=t["ap50"], paper=GMAIR_PAPER["ap50"]),
            Claim("ACC", [(seed, e["acc"])], target=t["acc"], paper=GMAIR_PAPER["acc"]),
            Claim("NMI", [(seed, e["nmi"])], target=t["nmi"], paper=GMAIR_PAPER["nmi"]),
            Claim(
                "ACC over SPAIR + GMM",
                [(seed, e["acc"] - b["acc"])],
                target=t["acc_gain"],
                paper=0.804 - 0.594,
            ),
            Claim(
                "NMI over SPAIR + GMM",
                [(seed, e["nmi"] - b["nmi"])],
                target=t["nmi_gain"],
                paper=0.755 - 0.563,
            ),
        ]
    ) + (
        f"\n\nGMAIR: {count(e['steps'])} steps; SPAIR + GMM: the baseline of `benchmarks/gmair_clustering/` "
        f"({count(base['cost']['spair']['steps'])} SPAIR steps, "
        f"{minutes(base['cost']['spair']['train_seconds'])} min). "
        "The paper's gains are its GMAIR minus its SPAIR + GMM."
    )


GMAIR_RUNS = [
    ("paper's architecture, 35 min", "benchmarks/gmair_clustering/gmair_clustering.json", "gmair"),
    ("SPAIR + GMM, SPAIR 35 min", "benchmarks/gmair_clustering/gmair_clustering.json", "spair_gmm"),
    (
        "`what_sees_cat=false`, 35 min",
        "benchmarks/gmair_clustering_variants/what_independent/gmair_clustering.json",
        "gmair",
    ),
    (
        "`what_dim=16`, 35 min",
        "benchmarks/gmair_clustering_variants/what_dim_16/gmair_clustering.json",
        "gmair",
    ),
    (
        "both, 30 min",
        "benchmarks/gmair_clustering_variants/what_independent_dim_16/gmair_clustering.json",
        "gmair",
    ),
    ("both, 100 min", "benchmarks/gmair_long/gmair_clustering.json", "gmair"),
    ("SPAIR + GMM, SPAIR 6.5 min on a GPU", "benchmarks/gmair_long/gmair_clustering.json", "spair_gmm"),
    ("both, 6.5 min on a GPU, batch 128", "benchmarks/gmair_gpu/gmair_clustering.json", "gmair"),
    ("+ `cat_kl=exact`, 85 min", "benchmarks/gmair_exact_cat_kl/eval_1000.json", None),
    ("the same continued, 225 min", "benchmarks/gmair_exact_cat_kl/eval_1000_continued.json", None),
    ("the same continued, 365 min", "benchmarks/gmair_exact_cat_kl/eval_1000_continued_365.json", None),
    (
        "a GMM fitted to the 225-min run's codes",
        "benchmarks/gmair_exact_cat_kl/gmm_on_gmair/eval_1000.json",
        None,
    ),
    (
        "+ `cat_expectation=exact` from scratch, 135 min",
        "benchmarks/gmair_cat_expectation/scratch/eval_1000.json",
        None,
    ),
    ("+ `cat_expectation=exact` from the 225-min state, 362 min", f"{GMAIR_BEST}/eval_1000.json", None),
]


def gmair_runs(r: Records) -> str:
    rows = []
    for label, path, key in GMAIR_RUNS:
        d = r(path)
        if key:
            m, steps = d["results"][key], d["cost"]["spair" if key == "spair_gmm" else key]["steps"]
        else:
            m, steps = d, d["steps"]
        rows.append(
            [
                label,
                count(steps),
                f3(m["ap50"]),
                f3(m["acc"]),
                f3(m["nmi"]),
                f3(m["count_accuracy"]),
                f"`{path.removeprefix('benchmarks/')}`",
            ]
        )
    return table(["run (1,000 test scenes)", "steps", "AP@0.5", "ACC", "NMI", "count acc.", "record"], rows)


# -- SSDIR --------------------------------------------------------------------------------------

SSDIR_BEST = "benchmarks/ssdir_probe_what/dim32_lrdrop_svi2000/ssdir_probe.json"


def ssdir_headline(r: Records) -> str:
    d = r(SSDIR_BEST)
    ssdir, spair = d["results"]["ssdir"]["per_seed"], d["results"]["spair"]["per_seed"]
    gap = [(a["seed"], a["accuracy"] - b["accuracy"]) for a, b in zip(ssdir, spair, strict=True)]
    return claim_table(
        [
            Claim(
                "SSDIR probe accuracy",
                [(s["seed"], s["accuracy"]) for s in ssdir],
                target=d["targets"]["ssdir_accuracy"],
                paper=d["paper"]["ssdir"]["accuracy"],
            ),
            Claim("SSDIR probe F1", [(s["seed"], s["f1"]) for s in ssdir], paper=d["paper"]["ssdir"]["f1"]),
            Claim("SPAIR probe accuracy", [(s["seed"], s["accuracy"]) for s in spair]),
            Claim(
                "SSDIR over SPAIR",
                gap,
                target=d["targets"]["gap_over_spair"],
                paper=d["paper"]["ssdir"]["accuracy"] - d["paper"]["spair"]["accuracy"],
            ),
            Claim("SSDIR AP@0.5", [(s["seed"], s["ap50"]) for s in ssdir]),
        ]
    )


def ssdir_throughput(r: Records) -> str:
    d = r(SSDIR_BEST)
    rows = [
        [m, f1(t["guide_images_per_second"]), f1(t["parse_images_per_second"]), t["batch"], t["repeats"]]
        for m, t in d["throughput"].items()
    ]
    cost = [f"{minutes(c['train_seconds'])}" for k, c in sorted(d["cost"].items()) if k.startswith("ssdir")]
    return (
        table(["encoder (128×128, 1 thread)", "guide images/s", "parse images/s", "batch", "passes"], rows)
        + "\n\nCost of this call per SSDIR seed (minutes; the earlier phases ran in the calls of the "
        "records named in the history): " + " / ".join(cost) + "."
    )


SSDIR_ROUNDS = [
    ("first defaults (8/16/32), 8,000 + 800 steps", "benchmarks/ssdir_probe/ssdir_probe.json"),
    ("first defaults, 3,000 + 1,000 steps", "benchmarks/ssdir_probe_3000/ssdir_probe.json"),
    ("16/32/64, 4,000 + 800", "benchmarks/ssdir_probe_wide/ssdir_probe.json"),
    ("16/32/64 + batch norm + `what_hidden=64`, 6,000 + 800", "benchmarks/ssdir_probe_bn/ssdir_probe.json"),
    ("fresh scenes, 8,000 + 800", "benchmarks/ssdir_probe_fresh/ssdir_probe.json"),
    ("fresh, `z_what` 32", "benchmarks/ssdir_probe_what/dim32/ssdir_probe.json"),
    ("fresh, 2,000 SVI steps", "benchmarks/ssdir_probe_what/steps2000/ssdir_probe.json"),
    ("fresh, `z_what` 32, + 1,500 at a tenth", "benchmarks/ssdir_probe_what/dim32_lrdrop/ssdir_probe.json"),
    ("the same, 2,000 SVI steps (the result)", SSDIR_BEST),
]


def ssdir_rounds(r: Records) -> str:
    rows = []
    for label, path in SSDIR_ROUNDS:
        seeds = r(path)["results"]["ssdir"]["per_seed"]
        rows.append(
            [
                label,
                " / ".join(f"{f3(s['accuracy'])} (seed {s['seed']})" for s in seeds),
                " / ".join(f3(s["ap50"]) for s in seeds),
                f"`{path.removeprefix('benchmarks/')}`",
            ]
        )
    return table(
        ["round (all scored on the 1,000 test scenes)", "test probe accuracy", "AP@0.5", "record"], rows
    )


def ssdir_ablation(r: Records) -> str:
    d = r("benchmarks/ssdir_ablation/ssdir_ablation.json")
    rows = []
    for k, v in d["variants"].items():
        m = d["results"][k]
        grid = v["grid_size"] if isinstance(v["grid_size"], int) else "–".join(str(g) for g in v["grid_size"])
        rows.append(
            [
                f"{v['min_size']}–{v['max_size']}",
                grid,
                f4(m["mse"]),
                f3(m["object_mse"]),
                f3(m["ap50"]),
                count(m["objects"]),
            ]
        )
    return table(
        [
            "Fig. 4 sweep, first defaults: digit sides (px)",
            "grid",
            "image MSE",
            "per-object MSE",
            "AP@0.5",
            "objects scored",
        ],
        rows,
    )


# -- Variational saccading ------------------------------------------------------------------------


def _acc(r: Records, path: str, key: str) -> float:
    return r(path)["results"][key]["accuracy"]


def saccade_headline(r: Records) -> str:
    p = r("benchmarks/saccade_fresh_scale35/saccade_cluttered.json")
    ident = [
        (0, _acc(r, "benchmarks/saccade_fresh_scale35/saccade_cluttered.json", "identify-saccade")),
        (1, _acc(r, "benchmarks/saccade_fresh_scale35_s1_105/saccade_cluttered.json", "identify-saccade")),
    ]
    sum_scratch = r("benchmarks/saccade_sum_fresh/saccade_cluttered.json")
    sum_init = r("benchmarks/saccade_attention_sum/saccade_cluttered.json")
    return claim_table(
        [
            Claim(
                "identification, 105 min",
                ident,
                target=p["targets"]["identify"],
                paper=p["paper"]["saccade"]["identify"],
            ),
            Claim(
                "sum, from scratch, 240 min",
                [(sum_scratch["settings"]["seed"], sum_scratch["results"]["sum-saccade"]["accuracy"])],
                target=p["targets"]["sum"],
                paper=p["paper"]["saccade"]["sum"],
            ),
            Claim(
                "sum, from identification weights, +30 min",
                [(sum_init["settings"]["seed"], sum_init["results"]["sum-saccade"]["accuracy"])],
                target=p["targets"]["sum"],
                paper=p["paper"]["saccade"]["sum"],
            ),
        ]
    )


SACCADE_RUNS = [
    (
        "saccade, identification, seed 0",
        "benchmarks/saccade_fresh_scale35/saccade_cluttered.json",
        "identify-saccade",
    ),
    (
        "saccade, identification, seed 1",
        "benchmarks/saccade_fresh_scale35_s1_105/saccade_cluttered.json",
        "identify-saccade",
    ),
    (
        "ResNet-18, identification",
        "benchmarks/saccade_resnet_identify/saccade_cluttered.json",
        "identify-resnet",
    ),
    ("saccade, sum from scratch", "benchmarks/saccade_sum_fresh/saccade_cluttered.json", "sum-saccade"),
    (
        "saccade, sum from identification weights",
        "benchmarks/saccade_attention_sum/saccade_cluttered.json",
        "sum-saccade",
    ),
    ("ResNet-18, sum", "benchmarks/saccade_resnet_sum/saccade_cluttered.json", "sum-resnet"),
]


def saccade_runs(r: Records) -> str:
    rows = []
    for label, path, key in SACCADE_RUNS:
        d = r(path)
        c = d["cost"][key]
        rows.append(
            [
                label,
                count(c["steps"]),
                minutes(c["train_seconds"]),
                count(d["settings"]["num_train"]),
                f"{d['parameters'][key] / 1e6:.2f} M",
                f3(d["results"][key]["accuracy"]),
                count(d["results"][key]["num_scenes"]),
            ]
        )
    return table(
        [
            "model and task (100×100)",
            "steps",
            "minutes",
            "training scenes",
            "parameters",
            "test accuracy",
            "test scenes",
        ],
        rows,
    )


def saccade_large(r: Records) -> str:
    d = r("benchmarks/saccade_large_attention/saccade_large.json")
    at1024 = {i["model"]: i for i in d["inference"] if i["side"] == 1024}
    rows = [
        [
            m,
            f4(i["seconds_per_image"]),
            f1(i["peak_working_mib"]),
            f"{d['parameters'].get(m, d['parameters'].get(m.split('_')[0], 0)) / 1e6:.2f} M",
        ]
        for m, i in at1024.items()
    ]
    c, t = d["comparison"], d["targets"]
    acc = r("benchmarks/saccade_large_fresh35/saccade_large.json")["results"]["saccade"]
    return (
        table(["model at 1024×1024 (2 threads)", "inference s/image", "peak working MiB", "parameters"], rows)
        + "\n\n"
        + table(
            ["claim", "ours", "bar", "met"],
            [
                [
                    "inference speed-up over the whole-image ResNet-18",
                    f1(c["speedup"]) + "×",
                    f"≥ {t['speedup']:.0f}×",
                    yes(c["speedup"] >= t["speedup"]),
                ],
                [
                    "peak working memory, share of ResNet-18's",
                    f3(c["memory_ratio"]),
                    f"≤ {t['memory_ratio']}",
                    yes(c["memory_ratio"] <= t["memory_ratio"]),
                ],
                [
                    "identification accuracy at 1024 px (saccade, from the seed-0 weights)",
                    f"{f3(acc['accuracy'])} ({count(acc['num_scenes'])} scenes)",
                    "within 0.05 of ResNet-18",
                    "unmeasured (ResNet-18 not trained at 1024 px)",
                ],
            ],
        )
    )


def saccade_noise(r: Records) -> str:
    d = r("benchmarks/saccade_noisy_proxy_attention/saccade_noisy_proxy.json")
    rows = []
    for k, m in d["results"].items():
        rows.append(
            [
                k,
                count(d["cost"][k]["steps"]),
                f3(m["accuracy"]),
                f3(m["objects_in_view"]),
                f3(m["scenes_in_view"]),
                f"{f3(m['accuracy_in_view'])} / {f3(m['accuracy_out_of_view'])}",
            ]
        )
    return table(
        [
            "run (18 min each)",
            "steps",
            "identification accuracy",
            "digits in view",
            "scenes wholly in view",
            "accuracy in view / not",
        ],
        rows,
    )


# -- MIST ---------------------------------------------------------------------------------------

MIST_RECON = [
    (
        "MNIST easy",
        "CPU, first defaults, 9 patches",
        "benchmarks/mist_reconstruction/mist_reconstruction.json",
        "easy-mist",
    ),
    ("MNIST easy", "grid baseline", "benchmarks/mist_reconstruction/mist_reconstruction.json", "easy-grid"),
    (
        "MNIST easy",
        "channel-wise baseline",
        "benchmarks/mist_reconstruction/mist_reconstruction.json",
        "easy-channelwise",
    ),
    (
        "MNIST easy",
        "GPU, CPU-scale networks",
        "benchmarks/mist_gpu/easy/mist_reconstruction.json",
        "easy-mist",
    ),
    (
        "MNIST easy",
        "GPU, decaying rate",
        "benchmarks/mist_gpu/easy_decay/mist_reconstruction.json",
        "easy-mist",
    ),
    (
        "MNIST hard",
        "CPU, told the counts, seed 0",
        "benchmarks/mist_reconstruction_count/mist_reconstruction.json",
        "hard-mist",
    ),
    (
        "MNIST hard",
        "CPU, told the counts, seed 1",
        "benchmarks/mist_reconstruction_count_s1/mist_reconstruction.json",
        "hard-mist",
    ),
    (
        "MNIST hard",
        "CPU, 9 patches, rounding fix",
        "benchmarks/mist_reconstruction_nearest/mist_reconstruction.json",
        "hard-mist",
    ),
    (
        "MNIST hard",
        "CPU, first defaults, 9 patches",
        "benchmarks/mist_reconstruction/mist_reconstruction.json",
        "hard-mist",
    ),
    ("MNIST hard", "grid baseline", "benchmarks/mist_reconstruction/mist_reconstruction.json", "hard-grid"),
    (
        "MNIST hard",
        "channel-wise baseline",
        "benchmarks/mist_reconstruction/mist_reconstruction.json",
        "hard-channelwise",
    ),
    (
        "MNIST hard",
        "GPU, CPU-scale networks",
        "benchmarks/mist_gpu/hard/mist_reconstruction.json",
        "hard-mist",
    ),
    (
        "Gabor, dense (30 impulses)",
        "CPU, seed 0",
        "benchmarks/mist_reconstruction_gabor_dense/mist_reconstruction.json",
        "gabor-dense-mist",
    ),
    (
        "Gabor, dense (30 impulses)",
        "CPU, seed 1",
        "benchmarks/mist_reconstruction_gabor_dense_s1/mist_reconstruction.json",
        "gabor-dense-mist",
    ),
    (
        "Gabor, sparse (9 kernels)",
        "CPU, first defaults",
        "benchmarks/mist_reconstruction/mist_reconstruction.json",
        "gabor-mist",
    ),
]


def _mist_recon(r: Records, path: str, key: str) -> tuple[dict, dict, float, float | None]:
    d = r(path)
    dataset, model = key.rsplit("-", 1)
    return (
        d["results"][key],
        d["cost"][key],
        d["paper_rmse"][dataset].get(model),
        d["blank_canvas_rmse"].get(dataset),
    )


def mist_table1_headline(r: Records) -> str:
    claims = []
    for label, rows in [
        ("MNIST hard RMSE, told the counts", MIST_RECON[5:7]),
        ("dense Gabor RMSE", MIST_RECON[12:14]),
    ]:
        per_seed, paper = [], None
        for _, _, path, key in rows:
            m, _, paper, _ = _mist_recon(r, path, key)
            per_seed.append((r(path)["settings"]["seed"], m["rmse"]))
        claims.append(Claim(label, per_seed, target=paper, paper=paper, lower=True))
    return (
        claim_table(claims)
        + "\n\nThe bar is the paper's MIST RMSE; on dense Gabor noise it is the paper's Gabor number."
    )


def mist_table1(r: Records) -> str:
    rows = []
    for dataset, run, path, key in MIST_RECON:
        m, c, paper, blank = _mist_recon(r, path, key)
        device = "GPU" if r(path)["machine"].get("cuda") else "CPU"
        rows.append(
            [
                dataset,
                run,
                count(c["steps"]),
                minutes(c["train_seconds"]),
                device,
                f3(m["rmse"]),
                f3(m["detection_rate"]),
                f3(paper),
                yes(meets(m["rmse"], paper, True)),
                f3(blank),
            ]
        )
    return table(
        [
            "dataset",
            "run",
            "steps",
            "minutes",
            "device",
            "RMSE",
            "detection at IoU 0.5",
            "paper",
            "≤ paper",
            "blank canvas",
        ],
        rows,
    )


MIST_T2 = [
    (0, "benchmarks/mist_classification_masked_s0/mist_classification.json"),
    (1, "benchmarks/mist_classification_masked_s1/mist_classification.json"),
]


def mist_table2_headline(r: Records) -> str:
    paper = r(MIST_T2[0][1])["paper"]["mist"]
    claims = []
    for metric, label in [
        ("detection_rate", "IoU 0.5 detection"),
        ("classification_accuracy", "classification of detected"),
        ("detected_and_classified", "both"),
    ]:
        claims.append(
            Claim(
                label,
                [(s, r(p)["results"]["mist"][metric]) for s, p in MIST_T2],
                target=paper[metric],
                paper=paper[metric],
            )
        )
    return claim_table(claims) + "\n\nThe bars are the paper's MIST numbers."


def mist_table2(r: Records) -> str:
    rows = []
    for s, p in MIST_T2:
        d = r(p)
        m, c = d["results"]["mist"], d["cost"]["mist"]
        rows.append(
            [
                f"MIST, seed {s}",
                count(c["steps"]),
                minutes(c["train_seconds"]),
                f3(m["detection_rate"]),
                f3(m["classification_accuracy"]),
                f3(m["detected_and_classified"]),
            ]
        )
    d = r("benchmarks/mist_classification/mist_classification.json")
    m, c = d["results"]["channelwise"], d["cost"]["channelwise"]
    rows.append(
        [
            "channel-wise baseline",
            count(c["steps"]),
            minutes(c["train_seconds"]),
            f3(m["detection_rate"]),
            f3(m["classification_accuracy"]),
            f3(m["detected_and_classified"]),
        ]
    )
    pc = d["paper"]["channelwise"]
    rows.append(
        [
            "paper's channel-wise",
            "",
            "",
            f3(pc["detection_rate"]),
            f3(pc["classification_accuracy"]),
            f3(pc["detected_and_classified"]),
        ]
    )
    return table(
        ["model", "steps", "minutes", "IoU 0.5 detection", "classification of detected", "both"], rows
    )


# -- Issues 31, 32, 35 ----------------------------------------------------------------------------


def rescore(r: Records) -> str:
    d = r("benchmarks/refactor_rescore/rescore.json")
    rows = []
    for name, v in d["runs"].items():
        rows.append(
            [
                name,
                v["kind"],
                len(v["metrics"]),
                yes(v["identical"]),
                yes(v.get("old_code_reproduces_record")),
                yes(v.get("new_equals_old_code_here")),
            ]
        )
    return table(
        [
            "run",
            "kind",
            "metrics compared",
            "identical to the record",
            "old code reproduces the record here",
            "new code = old code here",
        ],
        rows,
    )


def ddp(r: Records) -> str:
    rows, ratios = [], []
    for path in r.glob("benchmarks/ddp_speed/run*.json"):
        d = r(path)
        s, p = d["single"], d["data_parallel"]
        ratios.append(d["speedup"])
        rows.append(
            [
                path.rsplit("/", 1)[1],
                f1(s["images_per_second"]),
                f1(s["ms_per_step"]),
                f1(p["images_per_second"]),
                f1(p["ms_per_step"]),
                f"{d['speedup']:.2f}",
            ]
        )
    note = f"\n\nMedian ratio over {len(ratios)} runs: {statistics.median(ratios):.2f}." if ratios else ""
    return (
        table(
            [
                "record",
                "1 process × 2 threads: images/s",
                "ms/step",
                "2 ranks × 1 thread: images/s",
                "ms/step",
                "ratio",
            ],
            rows,
        )
        + note
    )


def own_images(r: Records) -> str:
    rows = []
    for path in [
        "benchmarks/own_images/first_try_black_background.json",
        "benchmarks/own_images/own_images.json",
    ]:
        first = "first_try" in path
        for name, v in r(path)["runs"].items():
            coco = v.get("coco") or {}
            val = v["validation"]
            rows.append(
                [
                    name + (" (black background, first try)" if first else ""),
                    count(v["steps"]),
                    minutes(v["training_seconds"]),
                    f1(val["elbo"]),
                    f3(val["elbo_per_pixel"]),
                    f1(v["objects_mean"]),
                    f3(coco.get("ap50")),
                    f3(coco.get("ap_coco")),
                    count(coco["num_detections"]) + f" ({count(coco['num_objects'])} true)" if coco else "–",
                ]
            )
    return table(
        [
            "images:model",
            "steps",
            "minutes",
            "validation ELBO/image",
            "per pixel",
            "boxes per image (parse)",
            "AP@0.5 (training image)",
            "AP@[.5:.95]",
            "detections scored by eval",
        ],
        rows,
    )


# -- Records other engineers write: pretrained models, step profiles, cross-model benchmark ----------


def _metrics(m: dict | None, interval: dict | None = None) -> str:
    if not m:
        return "–"
    parts = []
    for k in sorted(m):
        v = m[k]
        text = f"{k} {f3(v) if isinstance(v, float) else v}"
        if interval and k in interval:
            lo, hi = interval[k]
            text += f" [{f3(lo)}, {f3(hi)}]"
        parts.append(text)
    return "; ".join(parts)


def rescored(r: Records) -> str:
    """The kept runs' claims beside their scores on fresh validation and test scenes."""
    path = "benchmarks/rescore_fresh/rescore_fresh.json"
    if not r.exists(path):
        return "No record yet (`benchmarks/rescore_fresh/rescore_fresh.json`)."
    rows = []
    for label, row in r(path)["results"].items():
        for key, claimed in row["claimed"].items():
            low, high = row["test_intervals"].get(key, (None, None))
            fresh = row["test"][key]
            inside = None if low is None else low <= claimed <= high
            verdict = "–" if inside is None else ("within" if inside else "outside")
            rows.append(
                [
                    label,
                    key,
                    f3(claimed),
                    f3(row["validation"][key]),
                    f"{f3(fresh)} [{f3(low)}, {f3(high)}]",
                    verdict,
                ]
            )
    head = ["kept run", "score", "claimed (old test scenes)", "fresh validation", "fresh test [95 %]"]
    return table(head + ["claim in the interval"], rows)


def pretrained(r: Records) -> str:
    """One row per shipped model and bar: validation, test with its interval, the bar, met; the notes."""
    paths = r.glob("benchmarks/pretrained/*.json")
    if not paths:
        return "No records yet (`benchmarks/pretrained/*.json`)."
    rows, notes = [], []
    for path in paths:
        d = r(path)
        targets, test = d.get("targets") or {}, d.get("test") or {}
        validation, intervals = d.get("validation") or {}, d.get("test_intervals") or {}
        for i, (key, bar) in enumerate(sorted(targets.items())):
            low, high = intervals.get(key, (None, None))
            interval = f" [{f3(low)}, {f3(high)}]" if low is not None else ""
            met = meets(test.get(key), bar, lower_is_better(key))
            straddles = low is not None and min(low, high) < bar < max(low, high)
            if met is True and straddles:
                met_text = "yes (interval straddles the bar)"
            else:
                met_text = "–" if met is None else yes(met)
            head = [
                f"`{d.get('name', path)}`",
                d.get("model", "–"),
                f"`{d.get('preset', '–')}`",
                count(d.get("steps")),
                f1(d.get("cpu_minutes")),
            ]
            rows.append(
                (head if i == 0 else [""] * len(head))
                + [
                    key,
                    f3(validation.get(key)),
                    f3(test.get(key)) + interval,
                    f"{'≤' if lower_is_better(key) else '≥'} {f3(bar)}",
                    met_text,
                ]
            )
        if d.get("notes"):
            notes.append(f"- `{d.get('name')}`: {d['notes']}")
        notes.append(f"  Trained by: `{d.get('command')}`; weights sha256 `{d.get('sha256', '–')[:16]}…`.")
    head = ["name", "model", "preset", "steps", "CPU minutes", "score", "validation", "test [95 % interval]"]
    return table(head + ["bar", "met"], rows) + "\n\n" + "\n".join(notes)


def _leaves(d, prefix="", depth=0) -> list[tuple[str, object]]:
    out = []
    if isinstance(d, dict):
        for k in sorted(d):
            if k in ("command", "machine"):
                continue
            out += _leaves(d[k], f"{prefix}.{k}" if prefix else str(k), depth + 1)
    elif isinstance(d, int | float | str | bool) or d is None:
        out.append((prefix, d))
    return out


def generic(pattern: str) -> Callable[[Records], str]:
    """A record of a schema this page does not know yet: its scalar fields, one table per record."""

    def render(r: Records) -> str:
        parts = []
        for path in r.glob(pattern):
            rows = [[f"`{k}`", f4(v) if isinstance(v, float) else v] for k, v in _leaves(r(path))[:60]]
            parts.append(f"`{path}`\n\n" + table(["field", "value"], rows))
        return "\n\n".join(parts)

    return render


def reproduction(r: Records) -> str:
    """Each shipped card beside its command re-run with other seeds (``experiments/reproduce.py``):
    per metric the card (seed 0), each rerun, the mean and sample sd of all seeds, and whether each
    rerun lies inside the card's 95 % test interval (its sampling error over the test scenes)."""
    paths = r.glob("benchmarks/reproduce/*.json")
    if not paths:
        return "No records yet (`benchmarks/reproduce/*.json`)."
    by_name: dict[str, list[dict]] = {}
    for path in paths:
        d = r(path)
        by_name.setdefault(d["name"], []).append(d)
    rows, commands = [], []
    for name, reruns in sorted(by_name.items()):
        reruns.sort(key=lambda d: d["seed"])
        card = reruns[0]["card"]
        targets = reruns[0]["targets"]
        spread = seed_spread(targets, card, reruns)
        for key, bar in sorted(targets.items()):
            low, high = card["test_intervals"].get(key, (None, None))
            s = spread[key]
            rows.append(
                [
                    f"`{name}`",
                    key,
                    f"{f3(card['test'].get(key))} [{f3(low)}, {f3(high)}]",
                    ", ".join(f"s{d['seed']}: {f3(v)}" for d, v in zip(reruns, s["reruns"])),
                    ", ".join(yes(flag) for flag in s["inside_card_interval"]),
                    f"{f3(s['mean'])} ± {f3(s['sd'])} (n={s['seeds']})",
                    f"≥ {f3(bar)}: {yes(meets(s['mean'], bar, False))}",
                ]
            )
        commands.append(
            f"- `{name}`: card `{card['command'].split(' (=')[0]}`; reruns "
            + "; ".join(
                f"`{d['command']}` ({count(d['steps'])} steps, {f1(d['train_minutes'])} min)" for d in reruns
            )
        )
    head = ["model", "score", "card, seed 0 [95 % interval]", "reruns (test)", "inside the card's interval"]
    return table(head + ["mean ± sd over seeds", "bar"], rows) + "\n\n" + "\n".join(commands)


def equal_budgets(r: Records) -> str:
    """Each shipped model beside baselines trained for its budget (``experiments/equal_budget.py``):
    per model its training budget and the card's scores on the card's own validation and test scenes."""
    parts = []
    for path in r.glob("benchmarks/equal_budget/*.json"):
        d = r(path)
        keys = sorted(d["targets"])
        rows = []
        for label, m in d["models"].items():
            budget = m["budget"]
            minutes_ = f1(budget["train_minutes"])
            if "gmm_fit_minutes" in budget:
                minutes_ += f" + {f1(budget['gmm_fit_minutes'])} (GMM fit)"
            rows.append(
                [label, count(budget["steps"]), minutes_]
                + [f3(m["validation"].get(k)) for k in keys]
                + [_with_interval(m["test"], k, m["test_intervals"]) for k in keys]
            )
        head = ["model", "steps", "training minutes"]
        head += [f"val. {k}" for k in keys] + [f"test {k} [95 %]" for k in keys]
        split = d["splits"]["test"]
        parts.append(
            f"**`{d['card']}`** (`{path}`): {count(split['scenes'])} test scenes of seed {split['seed']}, "
            f"the card's. Bars: "
            + ", ".join(f"{k} ≥ {f3(v)}" for k, v in sorted(d["targets"].items()))
            + ".\n\n"
            + table(head, rows)
            + "\n\nBaselines trained by: "
            + "; ".join(
                f"{label}: `{m['budget']['command']}`"
                for label, m in d["models"].items()
                if "run_dir" in m["budget"]
            )
            + f"\n\nCommand: `{d['command']}`"
        )
    return "\n\n".join(parts)


def recipe_searches(r: Records) -> str:
    """Each recipe search (``experiments/recipe_search.py``): every variant's validation scores and
    summed selection score, the choice marked, and the choice's one test scoring with intervals."""
    parts = []
    for path in r.glob("benchmarks/recipe_search/*.json"):
        d = r(path)
        keys = list(d["select"])
        rows = []
        for v in d["variants"]:
            chosen = " **(chosen)**" if v["variant"] == d["chosen"] else ""
            rows.append(
                [f"v{v['variant']}{chosen}", ", ".join(f"`{o}`" for o in v["overrides"]), count(v["steps"])]
                + [f3(v["validation"].get(k)) for k in keys]
                + [f3(v["selection_score"])]
            )
        head = ["variant", "overrides", "steps"] + [f"val. {k}" for k in keys] + ["selection (sum)"]
        split = d["splits"]["test"]
        test = ", ".join(
            f"{k} {_with_interval(d['test'], k, d['test_intervals'])}"
            for k in sorted(d["test"])
            if k in keys or k in ("ap50", "count_accuracy", "acc", "nmi", "accuracy")
        )
        parts.append(
            f"**`{d['model']}`, preset `{d['preset']}`** (`{path}`), seed {d['seed']}:\n\n"
            + table(head, rows)
            + f"\n\nThe choice on {count(split['scenes'])} test scenes of seed {split['seed']}, scored "
            f"once: {test}.\n\nCommand: `{d['command']}`"
        )
    return "\n\n".join(parts)


#: Lean-step reruns kept elsewhere: a recipe search whose chosen run was trained with the lean step.
LEAN_RECIPE_RUNS = ("benchmarks/recipe_search/mist-mnist-hard.json",)
#: Lean-step reruns of a card's command with another seed (``experiments/reproduce.py``), for models
#: whose card takes hours to train again: the rerun serves as their lean-step check.
LEAN_REPRODUCE_RUNS = ("benchmarks/reproduce/gmair-s1.json",)
#: The scores the lean-step table shows, where a record has them.
LEAN_KEYS = (
    "ap50",
    "count_accuracy",
    "acc",
    "nmi",
    "accuracy",
    "probe_accuracy",
    "detection_rate",
    "classification_accuracy",
)


def lean_checks(r: Records) -> str:
    """Issue 36's "results unchanged": each model's preset trained again with the lean step (one seed,
    ``experiments/recipe_search.py`` with a one-point grid into ``benchmarks/lean_check``, or a recipe
    search of :data:`LEAN_RECIPE_RUNS`) beside its shipped card, on the card's validation and test
    scenes; one table per model."""
    paths = [
        *r.glob("benchmarks/lean_check/*.json"),
        *(p for p in (*LEAN_RECIPE_RUNS, *LEAN_REPRODUCE_RUNS) if r.exists(p)),
    ]
    parts = []
    for path in paths:
        d = r(path)
        reproduced = d.get("experiment") == "reproduce"  # the card's own command, another seed
        model = d["name"] if reproduced else d["model"]
        card = r(f"benchmarks/pretrained/{model}.json")
        if reproduced:  # the record itself holds the run's steps, minutes and validation scores
            run, preset, seed = d, card["preset"], f", seed {d['seed']}"
        else:
            run = next(v for v in d["variants"] if v["variant"] == d["chosen"])
            preset, seed = d["preset"], ""
        keys = [k for k in LEAN_KEYS if k in d["test"]]
        revision = (d.get("machine") or {}).get("revision") or "–"
        rows = []
        for label, splits, steps, minutes, val, test, intervals in (
            (f"card `{model}`", card.get("splits"), card.get("steps"), card.get("cpu_minutes"),
             card["validation"], card["test"], card.get("test_intervals") or {}),
            (f"lean step{seed}, revision `{revision}`", d["splits"], run["steps"], run["train_minutes"],
             run["validation"], d["test"], d["test_intervals"]),
        ):  # fmt: skip
            seeds = f"{splits['validation']['seed']} / {splits['test']['seed']}" if splits else "–"
            rows.append(
                [label, f"`{preset}`", seeds, count(steps), f1(minutes)]
                + [f3(val.get(k)) for k in keys]
                + [_with_interval(test, k, intervals) for k in keys]
            )
        head = (
            ["run", "preset", "scene seeds (val. / test)", "steps", "minutes"]
            + [f"val. {k}" for k in keys]
            + [f"test {k}" for k in keys]
        )
        command = d.get("record_command") or d["command"]
        parts.append(f"**`{model}`** (`{path}`; `{command}`):\n\n" + table(head, rows))
    if not parts:
        return "No records yet (`benchmarks/lean_check/*.json`)."
    return "\n\n".join(parts)


#: The step-profile records in the order of the table: label, what it measured.
STEP_PROFILES = (
    ("before", "before issue 36, eager, 1 thread"),
    (
        "after-1-thread",
        "now, eager, 1 thread as *before*, idle machine; with `--against REV`, the step of the package "
        "at git revision REV built too, its operations counted with the same threads and its step "
        "timed in turns (the count can depend on the threads: a multi-threaded `cat` dispatches a view "
        "per input, a multi-threaded sum its partial sums)",
    ),
    (
        "after-idle",
        "now, eager (the default), 2 threads, idle machine; with `--against REV` as *after-1-thread* "
        "(REV `8166e6d` is the package before issue 36, built by this script as it was at `c2f5fef`, "
        "`--against-script`; other revisions are earlier states of issue 36). Training fixes "
        "glibc's malloc thresholds (`train.keep_freed_memory`, default on; process-wide, so REV's step "
        "in turns runs with them too)",
    ),
    (
        "spair-adaptive-malloc",
        "now, eager, 2 threads, idle machine, `--adaptive-malloc`: glibc's adaptive malloc thresholds "
        "left as they are (`train.keep_freed_memory=false`), as before training fixed them for every "
        "data set: in some processes they settle into mapping the step's large temporaries afresh every "
        "step (see the page faults), in others not",
    ),
    (
        "ssdir-shipped-detector",
        "now, eager, 2 threads, SSDIR's SVI step with the shipped model's trained detector "
        "(`--shipped-detector`): the scenes' digits are kept, up to 24 per scene, where the untrained "
        "detector of the other columns keeps about one",
    ),
    (
        "compiled-inductor",
        "now, `train.compile=true` (inductor), 2 threads, idle machine, timed in turns with the eager "
        "step of the same model (the machine's speed drifts by a quarter between runs)",
    ),
)


def step_profiles(r: Records) -> str:
    """Operations and median time of one training step per model, before issue 36, now, and compiled."""
    found = [
        (label, what) for label, what in STEP_PROFILES if r.exists(f"benchmarks/step_profile/{label}.json")
    ]
    if not found:
        return "No records yet (`benchmarks/step_profile/*.json`)."
    records = {label: r(f"benchmarks/step_profile/{label}.json") for label, _ in found}
    models = list(next(iter(records.values()))["models"])
    rows = []
    for model in models:
        row = [model]
        base = (records.get("before") or {}).get("models", {}).get(model, {}).get("aten_ops")
        for label, _ in found:
            m = records[label]["models"].get(model)
            if m is None:
                row.append("–")
                continue
            ratio = f" ({base / m['aten_ops']:.1f}x fewer)" if base and label != "before" else ""
            same = m.get("aten_ops_baseline")  # the same threads, the revision of --against
            if same:
                at = records[label]["against"]
                ratio = f" ({same / m['aten_ops']:.2f}x fewer than {count(same)} at `{at}`)"
            eager = m.get("timing_eager", {}).get("median_ms")
            turns = f" (eager in turns: {f1(eager)} ms)" if eager is not None else ""
            baseline = m.get("timing_baseline", {}).get("median_ms")
            if baseline is not None:
                turns = f" (`{records[label].get('against')}` in turns: {f1(baseline)} ms)"
            n = m.get("host_reads")
            reads = "" if n is None else f", {n} host read{'' if n == 1 else 's'}"
            faults = m["timing"].get("minor_faults_per_step")
            paged = "" if faults is None else f", {count(round(faults))} page faults"
            row.append(
                f"{count(m['aten_ops'])}{ratio}{reads}, {f1(m['timing']['median_ms'])} ms{paged}{turns}"
            )
        rows.append(row)
    legend = "\n".join(
        f"- *{label}*: {what}; `{records[label]['command']}` (torch {records[label].get('torch', '–')}, "
        f"revision {(records[label].get('machine') or {}).get('revision') or '– (not recorded)'})"
        for label, what in found
    )
    head = ["model"] + [f"{label}: aten ops, median step" for label, _ in found]
    note = (
        "*Page faults*: the mean minor page faults of a timed step (pages the kernel maps and zero-fills "
        "on first touch), where the record counts them."
    )
    return table(head, rows) + "\n\n" + legend + "\n\n" + note


#: Issue 36's targets for our SPAIR step against the anchor's, at the anchor's network sizes.
ANCHOR_TARGETS = {"48": 3.0, "128": 8.0}


def anchor_comparison(r: Records) -> str:
    """Our SPAIR step beside SPAIR_pytorch's, both at the anchor's sizes, timed in turns."""
    path = "benchmarks/anchor_compare/anchor_compare.json"
    if not r.exists(path):
        return "No record yet (`benchmarks/anchor_compare/anchor_compare.json`)."
    d = r(path)
    rows = []
    for size, res in d["results"].items():
        ours, anchor = res["ours"], res["anchor"]
        target = ANCHOR_TARGETS.get(size)
        ratio = res["anchor_over_ours"]
        met = "–" if target is None else ("**met**" if ratio >= target else "**not met**")
        rows.append(
            [
                f"{size}×{size}",
                f"{f1(ours['median_ms'])} ({f1(ours['q25_ms'])}–{f1(ours['q75_ms'])})",
                f"{f1(anchor['median_ms'])} ({f1(anchor['q25_ms'])}–{f1(anchor['q75_ms'])})",
                f"{ratio:.2f}x",
                "–" if target is None else f"{target:g}x: {met}",
                " / ".join(_faults(res[name]) for name in ("ours", "anchor")),
            ]
        )
    head = [
        "image",
        "ours, ms (quartiles)",
        "SPAIR_pytorch, ms (quartiles)",
        "anchor / ours",
        "target",
        "page faults a step (ours / anchor)",
    ]
    sizes = d.get("sizes") or {}
    note = (
        f"Batch {d.get('batch_size')}, {d.get('threads', '–')} threads, {d.get('device')}; sizes "
        + ", ".join(f"{k} {v}" for k, v in sizes.items())
        + f"; the anchor at revision `{d.get('anchor_revision') or '– (not recorded)'}`; "
        f"`keep_freed_memory` {'on' if d.get('keep_freed_memory') else 'off'} "
        + (
            f"(in each process); processes: {d['processes']}; "
            if d.get("processes")
            else "(process-wide: both models); "
        )
        + f"`{d['command']}` (package revision {(d.get('machine') or {}).get('revision') or '–'})."
    )
    return table(head, rows) + "\n\n" + note


def _faults(timing: dict) -> str:
    """A side's minor page faults per step, or – for records from before they were counted."""
    count = timing.get("minor_faults_per_step")
    return "–" if count is None else f"{count:,.0f}"


def _with_interval(scores: dict, key: str, intervals: dict | None = None) -> str:
    """``scores[key]`` with its 95 % interval: from ``intervals``, else ``scores["intervals"]``."""
    value = scores.get(key)
    low, high = (intervals if intervals is not None else scores.get("intervals") or {}).get(key) or (
        None,
        None,
    )
    return f3(value) + (f" [{f3(low)}, {f3(high)}]" if low is not None and high is not None else "")


def _trained_on(row: dict) -> str:
    trained = row.get("trained_on")
    if not trained:
        return "– (no training)" if row.get("status") == "scored" else "–"
    kwargs = trained.get("kwargs") or {}
    size = kwargs.get("canvas_size")
    return f"{trained.get('dataset', '–')}" + (f" {size}×{size}" if isinstance(size, int) else "")


def cross_model(r: Records) -> str:
    """One table per task record of ``experiments/benchmark.py``: every model on the same test scenes."""
    parts = []
    for path in r.glob("benchmarks/benchmark/*.json"):
        d = r(path)
        test, timing = d.get("test") or {}, d.get("timing") or {}
        size = "×".join(str(s) for s in test.get("image_size") or []) or "–"
        rows, by_count = [], []
        for row in d.get("models") or []:
            scores = row.get("scores") or {}
            scored = row.get("status") == "scored"
            note = row.get("reason") if not scored else "; ".join(row.get("notes") or [])
            status = {"n/a": "**n/a**: ", "missing": "**missing**: "}.get(row.get("status"), "")
            rows.append(
                [
                    f"`{row.get('name')}`",
                    _trained_on(row),
                    f"`{row['preset']}`" if row.get("preset") else "–",
                    _with_interval(scores, "ap50") if scored else "n/a",
                    f3(scores.get("ap_coco")) if scored else "n/a",
                    _with_interval(scores, "count_accuracy") if scored else "n/a",
                    f1(row.get("ms_per_image")),
                    f1((row.get("memory") or {}).get("parse_peak_mb")),
                    count(row.get("parameters")),
                    f1(row.get("train_cpu_minutes")),
                    (status + (note or "")) or "–",
                ]
            )
            counts = row.get("by_count") or {}
            if scored and counts:
                by_count.append(
                    [f"`{row.get('name')}`"]
                    + [
                        f"{f3(counts[c].get('ap50'))} / {f3(counts[c].get('count_accuracy'))}"
                        for c in sorted(counts, key=int)
                    ]
                )
        head = [
            "model",
            "trained on",
            "preset",
            "AP@0.5 [95 %]",
            "AP .5:.95",
            "count accuracy [95 %]",
            "ms/image",
            "parse peak MB",
            "parameters",
            "training CPU min",
            "note",
        ]
        text = (
            f"**Task `{d.get('task')}`** (`{path}`): {count(test.get('num_scenes'))} test scenes of "
            f"`{test.get('dataset')}` ({size}), seed {test.get('seed')}, the same scenes for every model. "
            f"Inference: median over {timing.get('repeats')} passes of `parse` on a batch of "
            f"{timing.get('batch_size')} with {timing.get('threads')} torch thread(s), the models timed in "
            f"turns. Peak memory: {d.get('memory_method') or 'not measured'}.\n\n" + table(head, rows)
        )
        if by_count:
            counts = sorted({c for row in d["models"] for c in (row.get("by_count") or {})}, key=int)
            text += "\n\nPer true count, AP@0.5 / count accuracy:\n\n" + table(
                ["model", *(f"{c} object{'s' if int(c) != 1 else ''}" for c in counts)], by_count
            )
        text += f"\n\nCommand: `{d.get('command')}`"
        parts.append(text)
    return "\n\n".join(parts) or "No records yet (`benchmarks/benchmark/*.json`)."


# ---------------------------------------------------------------------------------------------
# The page

PRE_PROTOCOL = "**Predates the protocol.** "

SECTIONS: list[Section] = [
    Section(
        title="SPAIR: 5-digit scenes in 30 CPU minutes (issue 3)",
        paper="SPAIR (Crawford & Pineau 2019), §5.1; the bars are issue 3's",
        prose=(
            "48×48 scattered MNIST, five digits per scene, 10,000 training scenes, 500 test scenes. The "
            "recipe: "
            "8-px cells, a weak count prior (`pres_prob_end=0.5`), a learning rate constant for 30 % of the "
            "30-minute budget then a half-cosine to 0.05, and ink boxes (`SPAIR(tight_boxes=True, "
            'tight_mode="ink")`, threshold chosen on validation scenes by `experiments/spair_boxes.py`). '
            "Each run alone on the 2-core CPU with two torch threads. SPAIR's own defaults fall short (last "
            "table). The margins over the bars are within the 500 test scenes' sampling error."
        ),
        protocol=PRE_PROTOCOL
        + (
            "The recipe (count prior, decay schedule, cell size) was picked by test scores over the "
            "recipe runs listed below; only the box threshold was chosen on validation scenes, and those "
            "were scenes of training digits (seed 1), not the `VAL_DIGITS` split. Two seeds, not three; no "
            "bootstrap interval was recorded."
        ),
        commands=[
            f"{RECIPE}/pend0.5-2thread-s0/config.json",
            f"{RECIPE}/pend0.5-2thread-s0/spair_boxes.json",
        ],
        tables=[spair_headline, spair_boxes_table, spair_recipe_runs, spair_defaults],
        figures=[f"{RECIPE}/pend0.5-2thread-s1/parses_ink.png"],
    ),
    Section(
        title="SPAIR: generalisation to larger images with more objects (§5.2 / Fig. 3)",
        paper="SPAIR §5.2, Fig. 3",
        prose=(
            "Trained 30 minutes (one thread) on random 48×48 crops of 84×84 scenes with 6–10 digits, tested "
            "on "
            "full 84×84 scenes with 1–20 digits (50 scenes per count). The bar is a count MAE of at most 1 "
            "on "
            "scenes with 11–20 digits."
        ),
        protocol=PRE_PROTOCOL
        + "One seed; the budget was set before the run, nothing was chosen on its test scores.",
        commands=["benchmarks/spair_generalization/spair_generalization.json"],
        tables=[spair_generalization],
        figures=["benchmarks/spair_generalization/by_count.png"],
    ),
    Section(
        title="SPAIR: more digits per scene (§5.1 / Fig. 2)",
        paper="SPAIR §5.1, Fig. 2",
        prose=(
            "48×48 scenes with exactly 1, 3, 5, 7 or 9 digits; one SPAIR per count, 12 minutes each on one "
            "thread, 500 test scenes of the same count; ConnComp (τ = 0.05) on the same scenes. The bar is "
            "AP@0.5 ≥ 0.90 at every count; 8-px cells meet it, 12-px cells (the paper's) miss it at 7 and 9."
        ),
        protocol=PRE_PROTOCOL
        + "One seed per count; the 8-px cell size was chosen by test scores of the 5-digit runs.",
        commands=[
            "benchmarks/spair_scaling_cell8/spair_scaling.json",
            "benchmarks/spair_scaling/spair_scaling.json",
        ],
        tables=[spair_scaling],
        figures=["benchmarks/spair_scaling_cell8/ap_by_digits.png"],
    ),
    Section(
        title="SPAIR: Space Invaders (§5.4, qualitative)",
        paper="SPAIR §5.4 (qualitative)",
        prose=(
            "Frames of Space Invaders played by a random policy (`ale-py`); SPAIR (3 channels, 12-px cells, "
            "16-px anchor) trained on random 48×48 crops of 500 frames, then made to parse full 210×160 "
            "frames of a separate play. There is no ground truth: each invader gets its own box; the "
            "shields, the cannon, the score digits and the ground strip are cut into cell-sized pieces."
        ),
        protocol=PRE_PROTOCOL + "Qualitative; one seed, nothing chosen on the parsed frames.",
        commands=["benchmarks/spair_atari/spair_atari.json"],
        tables=[spair_atari],
        figures=["benchmarks/spair_atari/parses.png"],
    ),
    Section(
        title="SPAIR: lateral connections (§5.5 / Fig. 7)",
        paper="SPAIR §5.5, Fig. 7",
        prose=(
            "As the generalisation experiment, trained on crops of scenes with 11–15 digits, with and "
            "without "
            "lateral connections in the guide, 10 minutes each. The paper's finding (the mean-field guide "
            "fails) "
            "is not reproduced at this budget: the two guides are level within noise."
        ),
        protocol=PRE_PROTOCOL
        + "One seed per guide; equal wall-clock budgets (the lateral guide costs more per step).",
        commands=["benchmarks/spair_lateral_ablation/spair_lateral_ablation.json"],
        tables=[spair_lateral],
    ),
    Section(
        title="SPAIR: step time (issue 3)",
        paper="issue 3's bar: ≤ 100 ms per SVI step at 48×48, batch 32",
        prose=(
            "Complete SVI steps (loss, backward, clipping, Adam), median of 20 after 3 warm-up steps, "
            "machine "
            "otherwise idle. Growth is linear in pixels. The second table: whole training steps of the "
            "5-digit "
            "recipe when the training set is generated batch by batch (`TrainConfig.keep_freed_memory`)."
        ),
        protocol="A timing, no model selection involved.",
        commands=[
            "benchmarks/spair_speed/spair_speed.json",
            "benchmarks/spair_stream_speed/spair_stream_speed.json",
        ],
        tables=[spair_speed],
        figures=["benchmarks/spair_speed/step_time_by_pixels.png"],
    ),
    Section(
        title="Scene generation and the two commands (issue 2)",
        paper="issue 2's bar: 10,000 scenes in under 10 s",
        prose=(
            "10,000 48×48 scattered-digit scenes generated one by one through `dataset[i]` (measured while "
            "two "
            "training runs shared the machine: an upper bound), and each generator's time per scene. The "
            "second "
            "table is `make demo`: the shipped SPAIR and the demo's own SPAIR, trained 5 minutes with the "
            "`scattered-5` preset while another training shared the machine, on the same 500 test scenes. "
            "CI wall times are in the history."
        ),
        protocol="A timing and a demonstration; no model selection involved.",
        commands=["benchmarks/bench_data/bench_data.json"],
        tables=[bench_data, demo],
    ),
    Section(
        title="GMAIR: locating and clustering digits (§4.3 / Table 2; issue 4)",
        paper="GMAIR (Zhu et al. 2020), Table 2: 128×128 scenes with 1–10 digits, 440 k iterations",
        prose=(
            "64×64 MultiMNIST with 1–5 digits of 20 px, 10,000 training scenes, 1,000 test scenes. The best "
            "run: `what_sees_cat=false what_dim=16 cat_kl=exact`, then `cat_expectation=exact` (eq. 10's "
            "expectation over `z_cat` summed over the categories) from its 225-minute state; 362 minutes of "
            "one "
            "CPU thread in all, over four sessions. Scored as GMAIR's Appendix B.3: tight boxes, clustering "
            "accuracy (Hungarian) and NMI over detections matched at IoU 0.5. The baseline fits a "
            "10-component "
            "Gaussian mixture to SPAIR's `z_what` (`ppl_scenes.baselines.WhatGMM`). The issue's bars are "
            "met; "
            "the paper's ACC and NMI (at a larger scale) are not."
        ),
        protocol=PRE_PROTOCOL
        + (
            "One seed. The settings and each continuation were chosen by watching curves drawn on 200 test "
            "scenes, and the final test set scored the intermediate states. Budgets are not equal: the "
            "SPAIR + GMM baseline trained 35 minutes against GMAIR's 362, and its run was not kept to be "
            "re-scored beside GMAIR's."
        ),
        commands=[f"{GMAIR_BEST}/run/config.json", "benchmarks/gmair_clustering/gmair_clustering.json"],
        tables=[gmair_headline, gmair_runs],
        figures=["benchmarks/gmair_cat_expectation/clusters.png"],
    ),
    Section(
        title="SSDIR: object codes of multi-scale digits (§4.2–4.3 / Table 2; issue 5)",
        paper="SSDIR (Zieliński et al.), Table 2: probe accuracy 0.979 (SSDIR) and 0.192 (SPAIR) at 512×512",
        prose=(
            "128×128 multi-scale scattered MNIST (digit sides 16–64 px), 1,000 test scenes. SSDIR with the "
            "recipe that is now `SSDIRConfig`'s default (16/32/64 backbone with batch norm, `z_what` of 32, "
            "a "
            "stream of fresh scenes, 8,000 detector steps + 1,500 at a tenth of the rate + 2,000 SVI steps); "
            "SPAIR 14 minutes per seed on 10,000 scenes. A logistic-regression probe reads the digit from "
            "each "
            "object's `z_what` (25 % held out). **The issue's bar of 0.95 is met by the mean of three seeds, "
            "with no margin (one seed is below it); the paper's 0.979 is not reached.** The standard "
            "deviation "
            "is the sample sd over the three seeds (the record's `std` field is the population sd)."
        ),
        protocol=PRE_PROTOCOL
        + (
            "The recipe was reached after six rounds of comparisons of the test probe (the rounds table); "
            "no validation scenes were used. Budgets are not equal: SSDIR trained 107–108 minutes per seed, "
            "SPAIR 14. No bootstrap interval was recorded."
        ),
        commands=[SSDIR_BEST],
        tables=[ssdir_headline, ssdir_throughput, ssdir_rounds, ssdir_ablation],
        figures=[
            "benchmarks/ssdir_probe_what/dim32_lrdrop_svi2000/tsne.png",
            "benchmarks/ssdir_ablation/ablation.png",
        ],
    ),
    Section(
        title="Variational saccading: cluttered MNIST (§4.1 / Table 1; issue 6)",
        paper=(
            "Variational saccading (Ramapuram et al.), Table 1: identification 0.972, sum 0.954 at 100×100; "
            "0.952 at 1024×1024"
        ),
        prose=(
            "100×100 two-digit cluttered MNIST; glimpses placed by attention over a 32×32 proxy (the "
            "default), "
            "fresh training scenes and glimpses of up to 35 % of the side, the rate decaying over the last "
            "40 %. "
            "Identification is right when the predicted set of digits is the true one; the sum task predicts "
            "their sum. ResNet-18 on the whole image is the baseline. At 1024×1024 (the upsampled scenes) "
            "the "
            "saccade model's inference cost barely moves with the pixels while ResNet-18's grows with them; "
            "ResNet-18 could not be trained at 1024 px on this CPU, so the accuracy comparison there is "
            "unmeasured. The last table repeats the noisy-proxy study (§4.1.1) with the attention design."
        ),
        protocol=PRE_PROTOCOL
        + (
            "The attention settings (saliency, inhibition of return, glimpse scale) were chosen by a grid "
            "over "
            "the first 300 test scenes; the training curves were drawn on test scenes. Two identification "
            "seeds, "
            "one sum seed. Budgets are not equal: the saccade runs trained 105 and 240 minutes, ResNet-18 "
            "40. "
            "The 1024-px accuracy is on 100 test scenes."
        ),
        commands=[
            "benchmarks/saccade_fresh_scale35/saccade_cluttered.json",
            "benchmarks/saccade_sum_fresh/saccade_cluttered.json",
            "benchmarks/saccade_resnet_identify/saccade_cluttered.json",
            "benchmarks/saccade_large_fresh35/saccade_large.json",
            "benchmarks/saccade_noisy_proxy_attention/saccade_noisy_proxy.json",
        ],
        tables=[saccade_headline, saccade_runs, saccade_large, saccade_noise],
        figures=[
            "benchmarks/saccade_fresh_scale35/saccades_identify.png",
            "benchmarks/saccade_large_attention/cost_vs_side.png",
        ],
    ),
    Section(
        title="MIST: reconstruction and multiple-instance classification (§5 / Tables 1–2; issue 7)",
        paper="MIST (Angles et al. 2021), Table 1 (RMSE) and Table 2 (MNIST hard classification)",
        prose=(
            "80×80 scenes with 20-px digits (MNIST easy: nine digits on a jittered grid; MNIST hard: 1–9 "
            "digits) "
            "and Gabor noise; 10,000 training and 1,000 test scenes. Table 1: the synthesis RMSE (lower is "
            "better), MNIST hard told each scene's count (`count_from_labels=true`) and dense Gabor noise "
            "meet "
            "the paper in two seeds on the CPU. MNIST easy meets it only with larger networks on a GPU, and "
            "that run's record did not come back from the device (`benchmarks/mist_gpu/easy_big/output.txt` "
            "holds its printed table), so it is not in the table. Table 2: the paper's loss (eq. 3 alone) "
            "with "
            "the library's defaults, after the fix of the target heatmap, meets all three of the paper's "
            "numbers "
            "in two seeds."
        ),
        protocol=PRE_PROTOCOL
        + (
            "Two seeds each, not three. Curves were drawn on test scenes, and the fixes that made the "
            "classification work were found by looking at test-scene runs. The channel-wise baseline trained "
            "15.9 minutes against MIST's 25 (unequal budgets). The sparse-Gabor row is not like the paper's "
            "texture: an empty canvas already scores under the paper's number there."
        ),
        commands=[
            "benchmarks/mist_reconstruction_count/mist_reconstruction.json",
            "benchmarks/mist_reconstruction_gabor_dense/mist_reconstruction.json",
            "benchmarks/mist_classification_masked_s0/mist_classification.json",
            "benchmarks/mist_classification/mist_classification.json",
        ],
        tables=[mist_table1_headline, mist_table1, mist_table2_headline, mist_table2],
        figures=["benchmarks/mist_reconstruction_gabor_dense/examples_gabor-dense.png"],
    ),
    Section(
        title="The one-way architecture: recorded numbers re-scored (issue 31)",
        paper="no paper claim",
        prose=(
            "After the redesign of issue 31 every run was re-scored with the new code and compared with "
            "`==` to "
            "its record. The kept GMAIR run differs in `ap_spair`, `ap_coco` and `rmse` by about 1e-8 "
            "relative "
            "(float32 kernel rounding of this install; the pre-refactor code gives the same new values "
            "here). "
            "Per-metric values: `benchmarks/refactor_rescore/README.md`."
        ),
        protocol="A re-scoring of existing runs; no model selection involved.",
        commands=["benchmarks/refactor_rescore/rescore.json"],
        tables=[rescore],
    ),
    Section(
        title="Data-parallel training (issue 35)",
        paper="no paper claim",
        prose=(
            "SPAIR's default config on 48×48 scenes, global batch 32, 20 timed steps after 3 untimed, three "
            "runs "
            "one after another on the 2-core CPU. Two single-thread ranks are level with one two-thread "
            "process "
            "here; the GPU columns are unmeasured (no GPU was lent). Exactness against a single process is "
            "tested in `tests/infer/test_distributed.py`."
        ),
        protocol="A timing; no model selection involved.",
        commands=["benchmarks/ddp_speed/run1.json"],
        tables=[ddp],
    ),
    Section(
        title="Your own images: real photographs",
        # README links to this title's anchor (#your-own-images-real-photographs)
        paper="no paper claim (issue 32)",
        prose=(
            "The `train --images` / `parse` / `eval --images` path on images that ship inside PyPI wheels: "
            "scikit-image's `coins()` (24 coins; ground truth from scikit-image's own segmentation, "
            "`benchmarks/own_images/coins_truth.json`), the top-left 384×384 of `hubble_deep_field()` and 40 "
            "Space Invaders frames. The AP columns are scored on the photograph the models trained on."
        ),
        protocol=(
            "**Not a held-out result.** There is one image; its validation strip is part of it, and "
            "`background=learned`, the object size and the crop were chosen after the first run's AP on that "
            "same image. A demonstration of the path; none of these numbers meets the protocol for claims."
        ),
        commands=["benchmarks/own_images/own_images.json"],
        tables=[own_images],
        figures=["benchmarks/own_images/coins.png"],
    ),
    Section(
        title="Kept runs scored again on fresh scenes (issue 34)",
        paper="the claims of the sections above",
        prose=(
            "Every run whose final weights were kept, scored by `experiments/rescore_fresh.py` on 500 "
            "fresh validation scenes (MNIST's held-out training digits) and 1,000 fresh test scenes "
            "(seed 101), beside the number its record claimed on the scenes it was judged on. The SPAIR, "
            "SSDIR and MIST headline runs kept no weights; their new runs are the pretrained models below."
        ),
        protocol=(
            "These runs predate the validation split: they trained on all 60,000 MNIST training digits, "
            "so the validation digits were seen in training."
        ),
        commands=["benchmarks/rescore_fresh/rescore_fresh.json"],
        tables=[rescored],
        optional_glob="benchmarks/rescore_fresh/*.json",
    ),
    Section(
        title="Pretrained models (issue 33)",
        paper="the bars of the sections above",
        prose=(
            "The models shipped in the package (`ppl_scenes.pretrained(name)`), one record each in "
            "`benchmarks/pretrained/`: the preset, the budget, the scores on fresh validation scenes "
            "(MNIST's held-out training digits) and fresh test scenes (seed 101, with the 95 % bootstrap "
            "interval over them) and the bar. Written by `experiments/pretrained.py`."
        ),
        protocol=(
            "Nothing was chosen on these test scenes: the weights are each run's last. The notes say "
            "where a run predates the protocol (its recipe chosen on the old test scenes)."
        ),
        tables=[pretrained],
    ),
    Section(
        title="Reproducing the shipped models (issues 33, 34)",
        paper="the bars of the pretrained table",
        prose=(
            "Each card's command re-run with other seeds by `experiments/reproduce.py`, scored on the "
            "card's own validation and test scenes (seed 101). A rerun *reproduces* the card when it "
            "lies inside the card's 95 % test interval, i.e. within the sampling error of the test "
            "scenes; the mean and sample sd run over the card's seed and the reruns."
        ),
        protocol="Nothing is chosen here: each run's last weights, one test scoring per run.",
        tables=[reproduction],
        optional_glob="benchmarks/reproduce/*.json",
    ),
    Section(
        title="Step profiles",
        paper="no paper claim",
        prose=(
            "Issue 36: aten operations dispatched by one training step of each model at its default "
            "training size (batch 32; MIST's lifting step batch 16), counted by `torch.profiler` at "
            "every nesting level, and the median step time on this CPU, written by "
            "`experiments/step_profile.py`. Targets: SPAIR at most 4,000 operations and 60 ms a step "
            "with 2 threads; every other model 3x fewer operations than before. The compiled path "
            "compiles each model's `compiled_methods` (SPAIR and GMAIR: the guide's wavefront and the "
            "renderer); models without them are not listed there."
        ),
        protocol="Timings; no model selection involved. The *before* timings ran on 1 thread.",
        tables=[step_profiles],
        optional_glob="benchmarks/step_profile/*.json",
    ),
    Section(
        title="SPAIR beside SPAIR_pytorch (issue 36)",
        paper="no paper claim",
        prose=(
            "Complete training steps (loss, backward, Adam) of our SPAIR and of the public SPAIR_pytorch "
            "(the anchor, fetched by the user and never part of this repository), both set to the "
            "anchor's network sizes (28-px glimpses and objects, a 48-px anchor box, 50-d `z_what`, "
            "12-px cells), on the same scattered-digit batch, alternating one step of each, each "
            "program in a process of its own (in one process the memory the anchor frees each step was "
            "handed back to the kernel and our next step paged it in again; the anchor's own page faults "
            "come from its turnover of gigabytes a step, beyond the 1 GiB each process keeps), written by "
            "`experiments/anchor_compare.py`. The anchor runs its "
            "sequential `Spair` with its "
            "`train.py`'s default flags and its `RunManager` set up as its `train.py` does, its "
            "`assert`s dropped as under `python -O` (its layout checks mistake a 4x4 grid for a "
            "channel axis). Targets: 3x the anchor at 48×48 and 8x at 128×128. At these sizes most of "
            "our step draws each object: a 48-px box and its bilinear fringe need a 52×52 patch, "
            "filled by products with dense interpolation matrices from 28-px glimpses "
            "(`ops.paste_patches`) and composited, forward and backward (at our default sizes, 16-px "
            "boxes from 14-px glimpses, the patches are 20×20); the patches lie channel-major in memory "
            "and their three compositing layers are written in place with a hand-written backward "
            "(`ops.depth_weighted_layers`)."
        ),
        protocol="Timings; no model selection involved.",
        tables=[anchor_comparison],
        optional_glob="benchmarks/anchor_compare/*.json",
    ),
    Section(
        title="Lean step: results unchanged (issue 36)",
        paper="no paper claim",
        prose=(
            "Issue 36 asks that each model's preset reach its recorded accuracy again in the same budget "
            "after the step was made lean (one seed, on validation scenes). Each row pair: the shipped "
            "card, and the same preset and seed trained again with the lean step, scored on validation and "
            "test scenes of the seeds shown (the card's own, except MIST's, which come from its recipe "
            "search; the test scenes once, at the end). GMAIR's card takes six CPU hours to train again: "
            "its check is the reproduction rerun with seed 1 (the card's command, trained with the lean "
            "step), where that rerun has finished."
        ),
        protocol="One training seed; the test interval is a 95 % bootstrap over the test scenes.",
        tables=[lean_checks],
        optional_glob="benchmarks/lean_check/*.json",
    ),
    Section(
        title="Recipes chosen on validation scenes (issue 34)",
        paper="no paper claim: how the presets' settings are chosen",
        prose=(
            "Rule 2 of the protocol: a preset's settings varied over a grid by "
            "`experiments/recipe_search.py`, every variant trained through the library (no test-split "
            "scoring on the way) and scored on the same validation scenes; the variant with the largest "
            "sum of the selection scores is the choice, and only it is scored on test scenes."
        ),
        protocol="Chosen on validation scenes; the test scenes are scored once, for the choice alone.",
        tables=[recipe_searches],
        optional_glob="benchmarks/recipe_search/*.json",
    ),
    Section(
        title="Equal budgets for baselines (issue 34)",
        paper="GMAIR §4.3 (SPAIR + GMM), SSDIR §4.2 (SPAIR's codes)",
        prose=(
            "Rule 4 of the protocol: each shipped model beside baselines given its training budget (or the "
            "model given the baseline's), all scored on the shipped model's own validation and test scenes "
            "by `experiments/equal_budget.py`. SSDIR is scored by the linear probe of its matched codes "
            "(IoU > 0.5), its interval over the held-out codes; the others by detection and clustering "
            "scores with an interval over the test scenes. The budgets are wall-clock minutes of one "
            "torch thread on the 2-core machine, which ran two trainings at a time."
        ),
        protocol=(
            "Nothing is chosen: every model is its run's last weights, scored once on the test scenes. One "
            "seed per baseline. GMAIR at SPAIR + GMM's 35 minutes is here; SPAIR + GMM at GMAIR's 362 "
            "minutes is not yet measured (one run is longer than a working session of this machine, and "
            "run directories have not reliably outlived one). SSDIR's one-class variant keeps the card's "
            "recipe and steps but its detector learns boxes without digit labels "
            "(`experiments/ssdir_probe.py --ssdir-set detector_classes=1`, into "
            "`benchmarks/ssdir_probe_oneclass/`). The 35-minute pair was trained by "
            "`experiments/gmair_clustering.py` into `benchmarks/gmair_clustering_equal/`, whose record "
            "also scores the pair on its own validation and test scenes, with its curves and figures."
        ),
        tables=[equal_budgets],
        optional_glob="benchmarks/equal_budget/*.json",
    ),
    Section(
        title="Cross-model benchmark",
        paper="no paper claim",
        prose=(
            "Every model and the connected-components baseline on the same fresh test scenes of one "
            "task, each with its best preset (the pretrained model, or the run named in the command), "
            "written by `experiments/benchmark.py`. Models trained on other scenes are applied anyway "
            "(the *trained on* column; the note says when it is out of distribution); a model that cannot "
            "be scored says why (n/a). MIST with `count_from_labels` is told the true counts. SSDIR parses "
            "a fixed input size: larger scenes go in overlapping tiles, smaller ones padded. Training "
            "minutes are the model card's (or the run's own clock); ConnComp has none."
        ),
        protocol=(
            "Nothing is chosen on the test scenes: the weights are each model's last, and ConnComp's "
            "threshold is chosen on validation scenes (its own seed). Intervals: 95 % bootstrap over the "
            "test scenes. One seed per model."
        ),
        tables=[cross_model],
        optional_glob="benchmarks/benchmark/*.json",
    ),
]


HEADER = """\
# Benchmarks

<!-- Generated by `python experiments/report.py` from the JSON records under benchmarks/.
     Do not edit by hand: change the records or experiments/report.py, then run it again.
     `make test` runs `python experiments/report.py --check`. -->

Measured results, one section per claim, each with its current result on top and the command that
produced it. Every number in a table is read from a JSON record under `benchmarks/`; the prose is
written in `experiments/report.py`. How the results were reached (superseded runs included) is in
[`benchmarks/HISTORY.md`](benchmarks/HISTORY.md). Unless a record says otherwise the machine is the
project's CPU machine: 2 cores, no GPU (each record holds platform, threads and versions).

## Protocol

1. **Three splits everywhere.** Validation scenes come from digits never used for training scenes
   (MNIST's last 10,000 training digits are set aside: `ppl_scenes.data.digits.VAL_DIGITS`, split
   name `"val"`) and seeds of their own; test scenes from MNIST test digits, with a test seed that
   follows `--seed` unless fixed on purpose. Procedural data sets (shapes, Gabor) get disjoint seeds
   per split (the split's id is in the random stream).
2. **Everything that is chosen is chosen on validation**: recipes, thresholds, schedules, run
   lengths, curve points, checkpoint selection, attention settings. Curves are drawn on validation
   scenes. Test is scored once per run, at the end, by a separate evaluation, and every record
   holds both.
3. **Seeds and intervals.** A headline claim is the mean of at least three seeds with the sample
   standard deviation, plus a 95 % bootstrap interval over test scenes. A bar counts as met when the
   mean meets it; the table says when the interval straddles it.
4. **Equal budgets for baselines.**

Every result below (the pretrained models' records aside) was measured before this protocol; each
section says how it departs from it (settings chosen on test scenes, fewer than three seeds, no
interval, unequal budgets). "Paper reached" is "yes" only where our mean is at least as good as the
paper's own number; the bars are the issues'.

Detection metrics follow SPAIR: AP is VOC all-point average precision against the generators' true
boxes, at IoU 0.5 (AP@0.5) and averaged over IoU 0.1:0.1:0.9 (AP .1:.9, the paper's measure); count
accuracy is the share of test scenes whose number of objects is exactly right.
"""


def render_section(s: Section, r: Records) -> str:
    out = [f"## {s.title}", "", f"*Paper:* {s.paper}.", "", s.prose, "", s.protocol]
    for fn in s.tables:
        try:
            out += ["", fn(r)]
        except MissingRecord as e:
            out += ["", f"> **Missing record:** `{e.args[0]}` — this table cannot be drawn."]
            print(f"report.py: {s.title}: missing record {e.args[0]}", file=sys.stderr)
    commands = []
    for path in s.commands:
        try:
            commands += [c for c in commands_of(r(path)) if c not in commands]
        except MissingRecord as e:
            out += ["", f"> **Missing record:** `{e.args[0]}` — its command cannot be shown."]
            print(f"report.py: {s.title}: missing record {e.args[0]}", file=sys.stderr)
    if commands:
        out += ["", "Command (from the records):", "", "```", *commands, "```"]
    for fig in s.figures:
        if r.exists(fig):
            out += ["", f"![{Path(fig).stem}]({fig})"]
    return "\n".join(out)


# What a record needs under the protocol, and where it may hold it (keys searched a few levels deep).
NEEDS = {
    "command": ("command",),
    "machine": ("machine",),
    "seed": ("seed", "seeds"),
    "budget": ("minutes", "steps", "step", "budget", "train_seconds", "training_seconds"),
    "data source": ("data", "dataset", "datasets", "digit_source"),
    "validation scores": ("validation",),
    "test interval": ("test_interval", "test_intervals", "interval"),
}


def _has_key(d, keys, depth=0) -> bool:
    if depth > 3:
        return False
    if isinstance(d, dict):
        return any(k in d and d[k] is not None for k in keys) or any(
            _has_key(v, keys, depth + 1) for v in d.values()
        )
    if isinstance(d, list):
        return any(_has_key(v, keys, depth + 1) for v in d[:3])
    return False


def incomplete(r: Records) -> str:
    """Each result the page used (the JSON files of one directory, with its ``run/``) and what it lacks."""
    groups: dict[str, list[str]] = {}
    for path in sorted(r.used):
        parent = path.rsplit("/", 1)[0]
        key = parent.removesuffix("/run")
        groups.setdefault(key, []).append(path)
    rows, no_validation, no_interval = [], [], []
    for key, paths in groups.items():
        records = [r(p) for p in paths]
        lacks = [need for need, keys in NEEDS.items() if not any(_has_key(d, keys) for d in records)]
        name = f"`{key.removeprefix('benchmarks/')}/`"
        no_validation += [name] if "validation scores" in lacks else []
        no_interval += [name] if "test interval" in lacks else []
        provenance = [n for n in lacks if n not in ("validation scores", "test interval")]
        if provenance:
            rows.append([name, ", ".join(provenance)])
    text = (
        "What the records of the results used above lack (searched in the JSON files of each result's "
        "directory and its `run/`). Nothing is filled in by hand: a value missing from a record is missing "
        "from the page.\n\n"
    )
    with_validation = [
        f"`{k.removeprefix('benchmarks/')}/`"
        for k in groups
        if f"`{k.removeprefix('benchmarks/')}/`" not in no_validation
    ]
    text += f"- **Validation scores** (rule 2): {len(no_validation)} of {len(groups)} results have none" + (
        f"; those with them: {', '.join(with_validation)}." if with_validation else "."
    )
    text += (
        f"\n- **A 95 % bootstrap interval over test scenes** (rule 3): {len(no_interval)} of {len(groups)} "
        "results have none."
    )
    text += "\n\n" + (
        table(["result", "lacks"], rows)
        if rows
        else "Command, machine, seed, budget and data source: none lacking."
    )
    if r.missing:
        text += (
            "\n\nRecords a section needs and that are not there: "
            + ", ".join(f"`{p}`" for p in r.missing)
            + "."
        )
    return text


def render(root: Path | str = ROOT) -> str:
    r = Records(root)
    parts = [HEADER]
    for s in SECTIONS:
        if s.optional_glob and not r.glob(s.optional_glob):
            continue
        parts.append(render_section(s, r))
    parts.append("## Records incomplete\n\n" + incomplete(r))
    return "\n\n".join(p.rstrip("\n") for p in parts) + "\n"


def check(root: Path | str = ROOT, page: Path | None = None) -> tuple[bool, str]:
    """Whether the page equals what the records give, and a unified diff where it does not."""
    page = Path(page) if page else Path(root) / PAGE
    want = render(root)
    have = page.read_text() if page.is_file() else ""
    if have == want:
        return True, ""
    diff = difflib.unified_diff(
        have.splitlines(keepends=True),
        want.splitlines(keepends=True),
        fromfile=f"{page.name} (committed)",
        tofile=f"{page.name} (from the records)",
    )
    return False, "".join(diff)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 with a diff when the page differs from the records"
    )
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root (default: this checkout)")
    parser.add_argument(
        "--out", type=Path, default=None, help="page to write or check (default: ROOT/BENCHMARKS.md)"
    )
    args = parser.parse_args(argv)
    page = args.out or args.root / PAGE
    if args.check:
        ok, diff = check(args.root, page)
        if not ok:
            sys.stdout.write(diff)
            print(f"\n{page} differs from the records: run `python experiments/report.py`.", file=sys.stderr)
            return 1
        print(f"{page} matches the records.")
        return 0
    page.write_text(render(args.root))
    print(f"wrote {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
