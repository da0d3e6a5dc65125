"""The Examples sections of the public modules run as written (doctest)."""
from __future__ import annotations

import doctest
import importlib
import pkgutil
import warnings

import pytest

import ot_batch

# the public API's modules (the kernels and backends document their internals, not examples)
MODULES = sorted(m.name for m in pkgutil.iter_modules(ot_batch.__path__, "ot_batch.")
                 if not m.name.split(".")[-1].startswith("_") and m.name != "ot_batch.demo")


def test_every_public_function_module_is_listed():
    assert {"ot_batch.linear", "ot_batch.quadratic", "ot_batch.exact"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    mod = importlib.import_module(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a divide by zero in an example fails
        result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                                 verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed"
