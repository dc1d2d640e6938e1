"""compat = "azureml": unmodified ParallelRunStep entry scripts import what they expect.

Provides `azureml.core.Model` / `azureml.core.model.Model` (`Model.get_model_path(name)` resolves
through the job file's [models]) and `azureml_user.parallel_run.EntryScript`. A real azureml
installation is never shadowed: if `azureml.core` imports, nothing is installed.
"""
from __future__ import annotations

import importlib.util
import sys
import types
from typing import Any

from .entry import EntryScript, get_model_path


class Model:
    """The part of azureml.core.Model that entry scripts use."""

    def __init__(self, workspace: Any = None, name: str | None = None, version: Any = None, **_: Any) -> None:
        self.name, self.version = name, version

    @staticmethod
    def get_model_path(model_name: str, version: Any = None, _workspace: Any = None) -> str:
        return get_model_path(model_name, version)


def _real_azureml_present() -> bool:
    try:
        return importlib.util.find_spec("azureml.core") is not None
    except (ImportError, ValueError):
        return False


def _module(name: str, **attrs: Any) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    mod.__path__ = []          # a package, so submodules can be imported
    mod.__prs_mpi_compat__ = True
    return mod


def install() -> bool:
    """Register the shim modules; returns False when a real azureml is installed (left alone)."""
    if _real_azureml_present():
        return False
    model_mod = _module("azureml.core.model", Model=Model)
    core = _module("azureml.core", Model=Model, model=model_mod)
    parallel_run = _module("azureml_user.parallel_run", EntryScript=EntryScript)
    sys.modules.setdefault("azureml", _module("azureml", core=core))
    sys.modules.setdefault("azureml.core", core)
    sys.modules.setdefault("azureml.core.model", model_mod)
    sys.modules.setdefault("azureml_user", _module("azureml_user", parallel_run=parallel_run))
    sys.modules.setdefault("azureml_user.parallel_run", parallel_run)
    return True
