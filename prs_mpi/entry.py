"""The API entry scripts use: EntryScript, get_model_path, get_side_input, MiniBatchContext.

The supervisor hands the job's context to user code through PRS_MPI_* environment variables, so
this module works the same in the supervised child and with isolation = "none".
"""
from __future__ import annotations

import json
import logging
import os
import socket
import sys
from dataclasses import dataclass, field
from typing import Any, Mapping

ENV_RANK = "PRS_MPI_RANK"
ENV_HOST = "PRS_MPI_HOST"
ENV_OUTPUT_DIR = "PRS_MPI_OUTPUT_DIR"
ENV_LOG_DIR = "PRS_MPI_LOG_DIR"
ENV_MODELS = "PRS_MPI_MODELS"
ENV_SIDE_INPUTS = "PRS_MPI_SIDE_INPUTS"
ENV_LOG_LEVEL = "PRS_MPI_LOGGING_LEVEL"


@dataclass(frozen=True)
class MiniBatchContext:
    """The optional second argument of run(mini_batch, mini_batch_context)."""

    mini_batch_id: int
    attempt: int
    rank: int
    partition_key_value: Mapping[str, Any] = field(default_factory=dict)
    dataset: str | None = None

    @property
    def minibatch_index(self) -> int:   # the name ParallelRunStep's context uses
        return self.mini_batch_id


def _json_env(name: str) -> dict[str, str]:
    try:
        return json.loads(os.environ.get(name) or "{}")
    except json.JSONDecodeError:
        return {}


def get_model_path(name: str, version: Any = None) -> str:
    """The local path of the model registered as `name` in the job file's [models] table."""
    models = _json_env(ENV_MODELS)
    if name not in models:
        known = ", ".join(sorted(models)) or "none"
        raise KeyError(f"no model named {name!r} in the job file's [models] table (known: {known}); "
                       f"add {name} = \"path/to/model\" under [models]")
    return models[name]


def get_side_input(name: str) -> str:
    """The local path of the side input `name` (the job file's side_inputs table)."""
    sides = _json_env(ENV_SIDE_INPUTS)
    if name not in sides:
        known = ", ".join(sorted(sides)) or "none"
        raise KeyError(f"no side input named {name!r} (known: {known}); add it to side_inputs in the job file")
    return sides[name]


class EntryScript:
    """Per-process singleton with the worker's logger and directories (as in ParallelRunStep)."""

    _instance: "EntryScript | None" = None

    def __new__(cls) -> "EntryScript":
        if cls._instance is None:
            inst = super().__new__(cls)
            inst._setup()
            cls._instance = inst
        return cls._instance

    def _setup(self) -> None:
        self.rank = int(os.environ.get(ENV_RANK, "0"))
        self.host = os.environ.get(ENV_HOST) or socket.gethostname()
        self.output_dir = os.environ.get(ENV_OUTPUT_DIR) or os.getcwd()
        self.log_dir = os.environ.get(ENV_LOG_DIR) or os.path.join(self.output_dir, "logs", "user")
        self.working_dir = os.getcwd()
        self.agent_name = f"{self.host}-rank{self.rank}"
        logger = logging.getLogger(f"prs_mpi.user.rank{self.rank}")
        if not logger.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter(
                f"%(asctime)s %(levelname)s [rank {self.rank} {self.host}] %(name)s: %(message)s"))
            logger.addHandler(handler)
            logger.setLevel(os.environ.get(ENV_LOG_LEVEL, "INFO"))
            logger.propagate = False
        self.logger = logger
