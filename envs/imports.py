"""`module:attribute` names a user gives (a task factory, a tool, an environment), imported the one way: from the
installed packages or the working directory, with a one-line TaskError that says what could not be imported."""
from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from envs.errors import TaskError


def import_named(spec: str, what: str) -> Any:
    """The attribute `spec` = module:attribute names; `what` starts the error line (e.g. "task my_tasks:build")."""
    module_name, _, attribute = spec.partition(":")
    if os.getcwd() not in sys.path:  # my_module:thing from the working directory, as for rewards
        sys.path.append(os.getcwd())
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except Exception as error:
        raise TaskError(f"{what}: cannot import it ({type(error).__name__}: {error})") from None
