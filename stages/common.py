"""What every stage shares: loading the checked params, failing fast on bad values, writing JSON, logging."""
from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from landmarks.params import PARAMS_FILE, Params, ParamsError, load_params


class ConfigError(SystemExit):
    """A bad param value: printed as one line naming the value and what is allowed."""

    def __init__(self, message: str) -> None:
        super().__init__(f"error: {message}")


def stage_params(path: str | Path = PARAMS_FILE) -> Params:
    """params.yaml, every value checked (DVC's `-S` overrides are already written into it by `dvc exp run`).

    A stage reads only the keys dvc.yaml declares for it (tests/test_dvc_yaml.py checks that), but a
    bad value anywhere stops it: better at the first stage than after hours of downloading.
    """
    try:
        return load_params(path)
    except ParamsError as e:
        raise ConfigError(str(e)) from None


def check_choice(key: str, value: Any, allowed: Iterable[str]) -> str:
    """Return `value` if it is one of `allowed`, else stop with a one-line error naming `key`."""
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not valid; choose one of: {', '.join(allowed)}")
    return value


def write_json(path: str | Path, data: Any) -> None:
    """Write pretty JSON, creating the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def log(message: str) -> None:
    """Stage progress messages go to stderr, next to tqdm's bars."""
    print(message, file=sys.stderr, flush=True)

