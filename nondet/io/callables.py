"""A callable named in a config as ``"package.module:attr"`` (a user's model, data loader or
training function), imported without torch. The user's module is code the config asks to run:
a config naming one must be trusted like code (docs/robustness.md)."""

from __future__ import annotations

import importlib
import os
import sys


class ModelError(ValueError):
    """A user model (or loader) cannot be used; the message names it and the problem."""


def add_pythonpath(folder: str | None) -> None:
    """Put ``folder`` (relative to the working directory) first on sys.path, once."""
    if folder:
        folder = os.path.abspath(folder)
        if folder not in sys.path:
            sys.path.insert(0, folder)


def resolve(target: str, pythonpath: str | None = None, what: str = "model"):
    """The callable ``"pkg.module:attr"`` names (attr may be dotted), with a clear error."""
    add_pythonpath(pythonpath)
    module_name, _, attr = str(target).partition(":")
    try:
        obj = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        missing = str(e.name or "")
        if missing and not (module_name == missing or module_name.startswith(missing + ".")):
            raise ModelError(  # the module was found; a package it imports is not installed
                f"{what}: module {module_name!r} imports {missing!r}, which is not installed in this "
                f"environment: add it to requirements.txt and envs/torch.yaml (pip install {missing.split('.')[0]})"
            ) from None
        where = f" or in {os.path.abspath(pythonpath)}" if pythonpath else ""
        raise ModelError(
            f"{what}: cannot import module {module_name!r} of {target!r} ({e}); is it on "
            f"PYTHONPATH{where}? (set pythonpath: <folder> in the config)"
        ) from None
    except Exception as e:  # the user's module itself fails to import
        raise ModelError(f"{what}: importing module {module_name!r} failed: {type(e).__name__}: {e}") from e
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ModelError(f"{what}: module {module_name!r} has no attribute {attr!r} ({target!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ModelError(f"{what}: {target!r} is not callable (it is a {type(obj).__name__})")
    return obj
