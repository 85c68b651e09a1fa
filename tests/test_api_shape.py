"""Public functions take at most three positional parameters (as scanpy's API does).

Everything after the data (``adata``, ``labels``, ...) is a keyword or an options value, so
calls read the same in scripts, the CLI and the docks, and a new option never shifts an
argument. The test covers every public function of ``napari_cellama.core`` and
``napari_cellama.io`` (their ``__all__``), whoever adds it.
"""

from __future__ import annotations

import importlib
import inspect

import pytest

MAX_POSITIONAL = 3
POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _public_functions(module_name: str):
    module = importlib.import_module(module_name)
    for name in module.__all__:
        obj = getattr(module, name)
        if inspect.isfunction(obj):
            yield f"{module_name}.{name}", obj


def _positional(func) -> list[str]:
    return [p.name for p in inspect.signature(func).parameters.values() if p.kind in POSITIONAL]


@pytest.mark.parametrize("module_name", ["napari_cellama.core", "napari_cellama.io"])
def test_public_functions_take_at_most_three_positional_parameters(module_name):
    functions = list(_public_functions(module_name))
    assert len(functions) >= 10  # the modules were found and hold functions
    offenders = {
        qualname: _positional(func)
        for qualname, func in functions
        if len(_positional(func)) > MAX_POSITIONAL
    }
    assert not offenders, (
        f"public functions with more than {MAX_POSITIONAL} positional parameters (make the rest "
        "keyword-only with `*` or move them into an options dataclass):\n"
        + "\n".join(f"  {name}({', '.join(params)})" for name, params in sorted(offenders.items()))
    )


def test_the_check_names_the_function():
    """The failure message names the offending function and its positional parameters."""

    def too_many(a, b, c, d, *, e=1):
        return a

    assert _positional(too_many) == ["a", "b", "c", "d"]
    assert len(_positional(too_many)) > MAX_POSITIONAL
