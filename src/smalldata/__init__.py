"""smalldata: the most accurate classifier a few labeled images or texts can give, honestly evaluated.

    import smalldata
    data = smalldata.load_dataset("photos/")          # photos/CLASS/*.jpg, or a CSV of text,label
    model = smalldata.train(data)                      # baseline + heads, cross-validated; best refit
    model.predict(["a.jpg"]); model.save("flowers-model")
    model = smalldata.Model.load("flowers-model")
    clf = smalldata.SmalldataClassifier().fit(X, y)  # the same, as a scikit-learn estimator

The names below are imported on first use (PEP 562): `import smalldata` and the `smalldata`
command's start-up load neither torch nor scikit-learn.
"""

from __future__ import annotations

import importlib
import os
import sys
import types

# torch's OpenMP threads spin while they wait for work by default. Beside other busy processes the
# spinning threads steal the cores their siblings need: a text fine-tune's fold on 2 cores with two
# other busy processes took 75-92 s instead of 20 s, so the budget's deadline stopped fine-tunes
# that fit on a quiet machine, and the same data gave another model. Waiting passively costs about
# 6% on a quiet machine and brings that fold to 45-46 s, with the same probabilities
# (BENCHMARKS.md, "Targets of the automatic choice"). Set before torch is first imported; a
# user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# public name -> the module that defines it
_SOURCES = {
    "Comparison": "smalldata.evaluate",
    "DataError": "smalldata.errors",
    "Dataset": "smalldata.data",
    "Model": "smalldata.model",
    "ModelFolderError": "smalldata.errors",
    "SmalldataClassifier": "smalldata.sklearn_api",
    "TestResult": "smalldata.evaluate",
    "load_dataset": "smalldata.data",
    "load_image_folder": "smalldata.data",
    "load_text_csv": "smalldata.data",
    "train": "smalldata.train",
    "load_pool": "smalldata.unlabeled",
    "pool_from": "smalldata.unlabeled",
    "zero_shot_model": "smalldata.zero_shot",
}

__all__ = [
    "Comparison",
    "DataError",
    "Dataset",
    "Model",
    "ModelFolderError",
    "SmalldataClassifier",
    "TestResult",
    "load_dataset",
    "load_image_folder",
    "load_text_csv",
    "train",
    "load_pool",
    "pool_from",
    "zero_shot_model",
]


def __getattr__(name: str):
    if name not in _SOURCES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_SOURCES[name]), name)
    globals()[name] = value  # once: later reads do not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """`smalldata.train` is the function, as when the package imported it eagerly. The import system
    sets a submodule as an attribute of its package when it first loads it, so the first import of
    the module `smalldata.train` (by `smalldata.cli` inside a command, or by any other module) would
    replace the function with the module; that one assignment is refused. The module stays in
    `sys.modules`, and `from smalldata.train import ...` reads it from there."""

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, types.ModuleType) and value.__name__ == f"{__name__}.{name}" == _SOURCES.get(name):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
