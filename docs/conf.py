"""Sphinx configuration of the ot-batch documentation.

Build with ``make docs`` (warnings are errors), or
``python -m sphinx -W --keep-going -b html docs docs/_build/html``.
"""
import os
import re

import matplotlib

matplotlib.use("Agg")  # the gallery runs without a display

import ot_batch  # noqa: E402  (the installed, editable package)

# -- Project -----------------------------------------------------------------------------------
project = "ot-batch"
author = "the ot-batch developers"
copyright = "the ot-batch developers, MIT License"
release = ot_batch.__version__
version = ".".join(release.split(".")[:2])

# -- General -----------------------------------------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext"}  # docs/benchmarks.md is linked, not built
root_doc = "index"
exclude_patterns = ["_build", "_templates", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]
templates_path = ["_templates"]
default_role = "literal"  # `x` in a docstring is code, never a broken cross-reference

# -- autodoc / autosummary -----------------------------------------------------------------------
autosummary_generate = True  # stub pages in docs/gen_modules/ (git-ignored, `make clean`)
autodoc_typehints = "none"  # the numpydoc "Parameters" sections carry the types

# -- numpydoc ------------------------------------------------------------------------------------
numpydoc_show_class_members = False  # OTResult's properties are listed by autosummary
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks = set()  # no style validation at build time

# -- sphinx-gallery ------------------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    # every examples/plot_*.py is executed; other files are only shown
    "filename_pattern": re.escape(os.sep) + "plot_",
    "ignore_pattern": r"__init__\.py",
    "image_scrapers": ("matplotlib",),
    "doc_module": ("ot_batch",),
    "backreferences_dir": os.path.join("gen_modules", "backreferences"),
    "remove_config_comments": True,
    "abort_on_example_error": True,
}

# -- HTML ----------------------------------------------------------------------------------------
html_theme = "alabaster"
html_title = f"ot-batch {release}"
html_static_path = []
html_theme_options = {
    "description": "Many optimal-transport problems at once, POT-compatible",
    "fixed_sidebar": True,
}
