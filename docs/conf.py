"""Sphinx configuration: the API reference (autodoc + napoleon) and the Markdown guides (MyST).

Build with ``make docs`` (``sphinx-build -W --keep-going -b html docs docs/_build/html``). Nothing is
mocked and nothing is fetched: the package, torch and pyro are imported as installed, and intersphinx
is off (no network).

Two small directives live here:

``.. optional-automodule:: NAME``
    ``automodule`` for a module that may not exist yet on every branch (others are adding modules in
    parallel): documented when it imports, skipped without a warning when it is absent.
``.. cli-usage::``
    the ``--help`` text of ``ppl-scenes`` and of each of its verbs, read from the live parser.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import Directive, directives
from docutils.statemachine import StringList
from sphinx.util import logging

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ppl_scenes._version import __version__  # noqa: E402

project = "ppl_scenes"
author = "ppl_scenes authors"
copyright = "2026, ppl_scenes authors"
version = release = __version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []

# -- autodoc and napoleon ---------------------------------------------------------------------------
# Every module documents what it defines itself (so re-exports in a package's __init__ are not
# documented twice) and, of that, only the public names: those in its ``__all__`` when it has one.
autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
    "ignore-module-all": True,
}
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_class_signature = "mixed"
autodoc_inherit_docstrings = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_include_init_with_doc = False
napoleon_use_rtype = False
napoleon_attr_annotations = True

myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

html_theme = "alabaster"
html_title = f"ppl_scenes {__version__}"
html_static_path: list[str] = []
html_theme_options = {"description": "Object-centric scene models in Pyro", "page_width": "1200px"}

logger = logging.getLogger(__name__)


def _skip_names_outside_all(app, what, name, obj, skip, options):
    """Skip a module member that its defining module leaves out of ``__all__`` (a private helper)."""
    if what != "module" or skip:
        return None
    module = sys.modules.get(getattr(obj, "__module__", None) or "")
    public = getattr(module, "__all__", None)
    if public is not None and name not in public:
        return True
    return None


class OptionalAutomodule(Directive):
    """``automodule`` when the module exists, nothing (and no warning) when it does not."""

    required_arguments = 1
    has_content = False
    option_spec = {
        "members": directives.unchanged,
        "no-members": directives.flag,
        "undoc-members": directives.flag,
        "no-index": directives.flag,
    }

    def run(self):
        name = self.arguments[0]
        try:
            present = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:
            present = False
        if not present:
            logger.info("optional-automodule: %s is absent, skipped", name)
            return []
        lines = [f".. automodule:: {name}"]
        for key, value in self.options.items():
            lines.append(f"   :{key}:" + (f" {value}" if value else ""))
        source, line = self.state_machine.get_source_and_line(self.lineno)
        self.state_machine.insert_input(StringList(lines, source=source), source)
        return []


class CliUsage(Directive):
    """The ``--help`` of ``ppl-scenes`` and of each verb, as literal blocks (read from the parser)."""

    has_content = False

    def run(self):
        os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal's width; fix it for the page
        from ppl_scenes.cli import build_parser

        def usage(parser: argparse.ArgumentParser) -> nodes.literal_block:
            parser.color = False  # Python 3.14's argparse colours its help in some environments
            return nodes.literal_block(text=parser.format_help().rstrip())

        parser = build_parser()
        out = [usage(parser)]
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for verb, sub in action.choices.items():
                    out += [nodes.rubric(text=f"ppl-scenes {verb}"), usage(sub)]
        return out


def setup(app):
    app.connect("autodoc-skip-member", _skip_names_outside_all)
    app.add_directive("optional-automodule", OptionalAutomodule)
    app.add_directive("cli-usage", CliUsage)
    return {"parallel_read_safe": True}
