"""Draw the import graph of the package, part by part, laid out by the layers of tests/test_layers.py.

A *part* is a subpackage or a top-level module of ``ppl_scenes`` (as in ``tests/test_layers.py``). The
script reads every import of the package with ``ast`` -- at module level and inside functions alike --
and draws one node per part, in the row of its layer (bottom layer at the bottom), and one arrow per
pair of parts that import each other, as thick as the number of import statements behind it. Arrows
in an import cycle between parts are red; an arrow that points up the layers without closing a cycle
is orange. Parts that ``LAYERS`` does not name get a row of their own at the top.

The package root (``ppl_scenes/__init__.py``) sits above everything and may import anything; its
imports are left out (it only re-exports), but an import *of* the root from a part is drawn.

    python experiments/import_graph.py                      # -> docs/import_graph.png
    python experiments/import_graph.py --package-dir /old/checkout/ppl_scenes \\
        --out docs/import_graph_before.png --title "before the redesign"
"""

from __future__ import annotations

import argparse
import ast
import math
from collections import Counter, defaultdict
from pathlib import Path

import matplotlib
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402
from matplotlib.path import Path as MplPath  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ppl_scenes"
LAYERS_FILE = ROOT / "tests" / "test_layers.py"
ROOT_PART = "(root)"
UNLAYERED = "not in LAYERS"
BOW = 0.55  # how far an arc bows out per row it spans


def read_layers(path: Path = LAYERS_FILE) -> list[tuple[str, ...]]:
    """``LAYERS`` of ``tests/test_layers.py``, read with ``ast`` (the test module is not imported)."""
    for node in ast.parse(path.read_text()).body:
        target = node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        if isinstance(target, ast.Name) and target.id == "LAYERS" and node.value is not None:
            return [tuple(layer) for layer in ast.literal_eval(node.value)]
    raise ValueError(f"no LAYERS assignment in {path}")


def module_name(path: Path, package_dir: Path) -> str:
    parts = path.relative_to(package_dir.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, package_dir: Path) -> list[str]:
    """The package modules that ``path`` imports, one entry per import statement, at any depth."""
    top = package_dir.name
    name = module_name(path, package_dir)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == top]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            if module.split(".")[0] == top:
                # ``from pkg import sub`` where ``sub`` is a module imports that module
                subs = [f"{module}.{a.name}" for a in node.names]
                subs = [sub for sub in subs if _is_module(package_dir, sub)]
                found += subs or [module]
    return found


def _is_module(package_dir: Path, name: str) -> bool:
    path = package_dir.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def part_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT_PART


def part_graph(package_dir: Path) -> tuple[Counter, Counter]:
    """``(edges, sizes)``: import statements per ``(from_part, to_part)``, modules per part."""
    edges: Counter = Counter()
    sizes: Counter = Counter()
    for path in sorted(package_dir.rglob("*.py")):
        here = part_of(module_name(path, package_dir))
        sizes[here] += 1
        if here == ROOT_PART:
            continue  # the root re-exports everything; see the module docstring
        for module in imports(path, package_dir):
            there = part_of(module)
            if there != here:
                edges[here, there] += 1
    return edges, sizes


def cycle_parts(edges: Counter) -> list[set[str]]:
    """Strongly connected components of the part graph with more than one part (scipy's)."""
    nodes = sorted({p for edge in edges for p in edge})
    at = {v: i for i, v in enumerate(nodes)}
    rows, cols = zip(*[(at[a], at[b]) for a, b in edges]) if edges else ((), ())
    matrix = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(nodes), len(nodes)))
    _, labels = connected_components(matrix, directed=True, connection="strong")
    groups: dict[int, set[str]] = defaultdict(set)
    for v, label in zip(nodes, labels):
        groups[int(label)].add(v)
    return [g for g in groups.values() if len(g) > 1]


def rows_of(parts: set[str], layers: list[tuple[str, ...]]) -> list[list[str]]:
    """The parts present, row by row from the bottom: the layers, then unlayered parts, then the root."""
    rows = [[p for p in layer if p in parts] for layer in layers]
    layered = {p for layer in layers for p in layer}
    extra = sorted(parts - layered - {ROOT_PART})
    rows.append(extra)
    rows.append([ROOT_PART] if ROOT_PART in parts else [])
    return rows


def draw(package_dir: Path, out: Path, layers: list[tuple[str, ...]], title: str) -> dict:
    """Draw the part graph as an arc diagram: the parts in one column, the bottom layer at the bottom.

    An import that points down the layers bows out to the right; one that points up (or stays in a
    layer) bows out to the left, so every arc on the left is a breach of the layers.
    """
    edges, sizes = part_graph(package_dir)
    parts = set(sizes) - ({ROOT_PART} if not any(b == ROOT_PART for _, b in edges) else set())
    edges = Counter({e: n for e, n in edges.items() if e[0] in parts and e[1] in parts})
    cycles = cycle_parts(edges)
    in_cycle = {p: i for i, c in enumerate(cycles) for p in c}
    rows = rows_of(parts, layers)
    row_names = [f"layer {k}" for k in range(len(layers))] + [UNLAYERED, "package root"]
    rank, ypos, bands, y = {}, {}, [], 0.0
    for k, row in enumerate(rows):
        if not row:
            continue
        first = y
        for p in row:
            rank[p], ypos[p] = k, y
            y += 1.0
        bands.append((row_names[k], first - 0.5, y - 0.5))
        y += 0.35
    height = y - 0.35

    box_w, box_h = 1.6, 0.62
    right = max((BOW / 2 * abs(ypos[a] - ypos[b]) for a, b in edges if rank[b] < rank[a]), default=0)
    left = max((BOW / 2 * abs(ypos[a] - ypos[b]) for a, b in edges if rank[b] >= rank[a]), default=0)
    left = max(left, 1.0) + 0.4
    right += 0.5
    width = 1.6 + left + box_w + right
    fig, ax = plt.subplots(figsize=(0.95 * width, 0.6 * height + 1.5))
    ax.set_xlim(-box_w / 2 - left - 1.6, box_w / 2 + right)
    ax.set_ylim(-0.7, height - 0.3)
    ax.axis("off")
    for i, (name, lo, hi) in enumerate(bands):
        ax.axhspan(lo - 0.15, hi + 0.15, color="0.95" if i % 2 == 0 else "white", zorder=0, lw=0)
        ax.text(
            -box_w / 2 - left - 1.55, (lo + hi) / 2, name, ha="left", va="center", fontsize=9, color="0.4"
        )

    for p, y in ypos.items():
        colour = "#fde0dd" if p in in_cycle else ("#fff3cd" if rank[p] >= len(layers) else "#e8f0fe")
        edge = "#c0392b" if p in in_cycle else "#5b7db1"
        ax.add_patch(
            FancyBboxPatch(
                (-box_w / 2, y - box_h / 2),
                box_w,
                box_h,
                boxstyle="round,pad=0.02,rounding_size=0.12",
                fc=colour,
                ec=edge,
                lw=1.2,
                zorder=3,
            )
        )
        n = sizes[p]
        ax.text(0, y + 0.1, p, ha="center", va="center", fontsize=10, weight="bold", zorder=4)
        ax.text(0, y - 0.17, f"{n} module{'s' * (n != 1)}", ha="center", va="center", fontsize=7, zorder=4)

    counts = {"edges": len(edges), "imports": sum(edges.values()), "cycles": [sorted(c) for c in cycles]}
    against = []
    for (a, b), n in sorted(edges.items(), key=lambda e: -abs(ypos[e[0][0]] - ypos[e[0][1]])):
        cyclic = a in in_cycle and in_cycle.get(a) == in_cycle.get(b)
        down = rank[b] < rank[a]
        if not down and not cyclic:
            against.append(f"{a}->{b}")
        colour = "#c0392b" if cyclic else ("0.3" if down else "#e67e22")
        side = 1 if down else -1
        x0, y0, y1 = side * box_w / 2, ypos[a], ypos[b]
        bow = side * BOW * abs(y1 - y0)  # the control point's distance: nested arcs never cross
        arc = MplPath(
            [(x0, y0), (x0 + bow, (y0 + y1) / 2), (x0, y1)], [MplPath.MOVETO, MplPath.CURVE3, MplPath.CURVE3]
        )
        ax.add_patch(
            FancyArrowPatch(
                path=arc,
                arrowstyle="-|>",
                mutation_scale=8 + 2 * math.sqrt(n),
                lw=0.5 + 0.8 * math.sqrt(n),
                color=colour,
                alpha=0.7 if down and not cyclic else 0.95,
                zorder=2,
            )
        )
        apex = x0 + bow / 2  # the curve's furthest point (t = 1/2)
        ax.text(
            apex + side * 0.05,
            (y0 + y1) / 2,
            str(n),
            fontsize=7,
            color=colour,
            ha="left" if down else "right",
            va="center",
            zorder=4,
        )
    counts["against_layers"] = against
    ax.set_title(
        f"{title}\n{len(parts)} parts, {counts['imports']} import statements between them "
        "(arrow width ~ sqrt(count), count at the arc)\n"
        f"right: imports down the layers; left: up the layers (orange); red: import cycles ({len(cycles)})",
        fontsize=9,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return counts


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--package-dir", type=Path, default=PACKAGE, help="the package to read (ppl_scenes/)")
    parser.add_argument("--layers", type=Path, default=LAYERS_FILE, help="the file that defines LAYERS")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "import_graph.png", help="the PNG")
    parser.add_argument("--title", default="ppl_scenes: imports between parts", help="figure title")
    args = parser.parse_args(argv)
    counts = draw(args.package_dir.resolve(), args.out, read_layers(args.layers), args.title)
    print(f"{args.out}: {counts['edges']} arrows over {counts['imports']} import statements")
    print(f"  cycles between parts: {counts['cycles'] or 'none'}")
    print(f"  arrows up the layers outside cycles: {counts['against_layers'] or 'none'}")


if __name__ == "__main__":
    main()
