"""Job file (TOML) → frozen JobConfig: defaults, overrides, validation with did-you-mean hints."""
from __future__ import annotations

import ast
import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError
from .placement import PlacementConfig

OUTPUT_ACTIONS = ("append_row", "summary_only")
INPUT_KINDS = ("file", "tabular")
ISOLATIONS = ("process", "none")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
URL_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(value: int | str) -> int:
    """'1MB' → 1048576. Units are powers of 1024 as in ParallelRunStep; a bare number is bytes."""
    if isinstance(value, bool):
        raise ValueError(f"expected a byte size, found {value!r}")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"expected a positive byte size, found {value}")
        return value
    m = _SIZE_RE.match(str(value))
    if not m:
        raise ValueError(f"expected a byte size like 1024, '64KB', '1MB' or '1GB', found {value!r}")
    unit = (m.group(2) or "").upper().replace("I", "").rstrip("B") or ""
    n = int(float(m.group(1)) * _UNITS[unit])
    if n <= 0:
        raise ValueError(f"expected a positive byte size, found {value!r}")
    return n


def is_url(path: str) -> bool:
    return bool(URL_RE.match(path)) and not path.startswith("file://")


@dataclass(frozen=True)
class InputConfig:
    kind: str = "file"
    paths: tuple[str, ...] = ()
    format: str | None = None
    partition_format: str | None = None
    hdf5_dataset: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    input_mode: str = "download"
    scratch_dir: str | None = None


@dataclass(frozen=True)
class JobConfig:
    job_file: str
    entry_script: str
    source_directory: str
    output_dir: str
    input: InputConfig
    arguments: tuple[str, ...] = ()
    mini_batch_size: int = 10
    error_threshold: int = -1
    allowed_failed_count: int = -1
    allowed_failed_percent: float = 100.0
    output_action: str = "append_row"
    append_row_file_name: str = "parallel_run_step.txt"
    append_row_format: str = "csv"
    run_invocation_timeout: float = 60.0
    run_max_try: int = 3
    init_max_try: int = 3
    process_count_per_node: int | None = None
    node_count: int | None = None
    logging_level: str = "INFO"
    allow_reuse: bool = True
    isolation: str = "process"
    prefetch: int = 2
    flush_bytes: int = 4 * 1024**2
    flush_interval: float = 0.5
    fsync: bool = False
    child_memory_limit: int | None = None
    status_interval: float = 5.0
    progress_interval: float = 30.0
    resource_monitor_interval: float = 10.0
    grace_period: float = 60.0
    compat: str | None = None
    partition_keys: tuple[str, ...] = ()
    side_inputs: Mapping[str, str] = field(default_factory=dict)
    side_inputs_as_arguments: bool = True
    environment_variables: Mapping[str, str] = field(default_factory=dict)
    models: Mapping[str, str] = field(default_factory=dict)
    placement: PlacementConfig = field(default_factory=PlacementConfig)
    ranks_per_leader: int | str = "auto"   # [dispatch]: "auto" | 0 (no leaders) | N (see prs_mpi/leader.py)
    speculative: bool = False              # [dispatch]: idle workers re-run stragglers at the tail (protocol.py)

    @property
    def output_file(self) -> str:
        """The append file; for append_row_format = "parquet" a directory of Parquet part files."""
        if self.append_row_format == "parquet":
            stem = os.path.splitext(self.append_row_file_name)[0]
            return os.path.join(self.output_dir, stem + ".parquet")
        return os.path.join(self.output_dir, self.append_row_file_name)

    @property
    def entry_script_path(self) -> str:
        return os.path.join(self.source_directory, self.entry_script)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able view (for job_result.json and `validate`)."""
        return _jsonable(dataclasses.asdict(self))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


# ---------------------------------------------------------------- schema
# key -> (expected description, checker(value) -> normalised value or raise ValueError)

def _int(lo: int | None = None, allow_minus_one: bool = False):
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError
        if allow_minus_one and v == -1:
            return v
        if lo is not None and v < lo:
            raise ValueError
        return v
    return check


def _num(lo: float = 0.0, hi: float | None = None, strict: bool = False):
    def check(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError
        if v < lo or (strict and v == lo) or (hi is not None and v > hi):
            raise ValueError
        return float(v)
    return check


def _choice(options: tuple[str, ...], upper: bool = False):
    def check(v: Any) -> str:
        if not isinstance(v, str) or (v.upper() if upper else v) not in options:
            raise ValueError
        return v.upper() if upper else v
    return check


def _str(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError
    return v


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError
    return v


def _str_list(v: Any) -> tuple[str, ...]:
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(x, (str, int, float)) for x in v):
        raise ValueError
    return tuple(str(x) for x in v)


def _str_map(v: Any) -> dict[str, str]:
    if not isinstance(v, Mapping) or not all(isinstance(x, (str, int, float, bool)) for x in v.values()):
        raise ValueError
    return {str(k): (str(x).lower() if isinstance(x, bool) else str(x)) for k, x in v.items()}


def _opt(check):
    def wrapped(v: Any):
        return None if v is None or v == "" else check(v)
    return wrapped


def _size(v: Any) -> int:
    return parse_size(v)


TOP_LEVEL: dict[str, tuple[str, Any]] = {
    "entry_script": ("a file name relative to source_directory", _str),
    "source_directory": ("a directory relative to the job file", _str),
    "arguments": ("a list of strings", _str_list),
    "mini_batch_size": ("a positive file count (file input) or byte size like '1MB' (tabular)", None),
    "error_threshold": ("an integer >= 0, or -1 to ignore all item failures", _int(0, True)),
    "allowed_failed_count": ("an integer >= 0, or -1 for no limit", _int(0, True)),
    "allowed_failed_percent": ("a number between 0 and 100", _num(0, 100)),
    "output_action": ("one of " + ", ".join(OUTPUT_ACTIONS), _choice(OUTPUT_ACTIONS)),
    "append_row_file_name": ("a file name", _str),
    "append_row_format": ("'csv', 'jsonl' or 'parquet'", _choice(("csv", "jsonl", "parquet"))),
    "output_dir": ("a directory relative to the job file", _str),
    "run_invocation_timeout": ("a number of seconds > 0", _num(0, strict=True)),
    "run_max_try": ("an integer >= 1", _int(1)),
    "init_max_try": ("an integer >= 1", _int(1)),
    "process_count_per_node": ("an integer >= 1", _opt(_int(1))),
    "node_count": ("an integer >= 1", _opt(_int(1))),
    "logging_level": ("one of " + ", ".join(LOG_LEVELS), _choice(LOG_LEVELS, upper=True)),
    "allow_reuse": ("true or false", _bool),
    "isolation": ("'process' (user code in a supervised child) or 'none'", _choice(ISOLATIONS)),
    "prefetch": ("an integer >= 1", _int(1)),
    "flush_bytes": ("a byte size like '4MB'", _size),
    "flush_interval": ("a number of seconds >= 0", _num(0)),
    "fsync": ("true or false", _bool),
    "child_memory_limit": ("a byte size like '4GB'", _opt(_size)),
    "status_interval": ("a number of seconds > 0", _num(0, strict=True)),
    "progress_interval": ("a number of seconds > 0", _num(0, strict=True)),
    "resource_monitor_interval": ("a number of seconds >= 0 (0 = off)", _num(0)),
    "grace_period": ("a number of seconds >= 0", _num(0)),
    "compat": ("'azureml' or empty", _opt(_choice(("azureml",)))),
    "partition_keys": ("a list of column names", _str_list),
    "side_inputs": ("a table of name = path or URL", _str_map),
    "side_inputs_as_arguments": ("true or false", _bool),
    "environment_variables": ("a table of NAME = value", _str_map),
    "models": ("a table of name = path or URL", _str_map),
    "input": ("a table [input]", None),
    "placement": ("a table [placement]", None),
    "dispatch": ("a table [dispatch]", None),
}

INPUT_KEYS: dict[str, tuple[str, Any]] = {
    "kind": ("one of " + ", ".join(INPUT_KINDS), _choice(INPUT_KINDS)),
    "paths": ("a list of paths, globs, directories, URLs or @listing files", _str_list),
    "format": ("one of csv, jsonl, parquet, hdf5", _opt(_choice(("csv", "jsonl", "parquet", "hdf5")))),
    "partition_format": ("a pattern like '{user}/{genre}/*.wav'", _opt(_str)),
    "hdf5_dataset": ("a dataset path like '/features'", _opt(_str)),
    "options": ("a table of reader options", lambda v: dict(v) if isinstance(v, Mapping) else _raise()),
    "input_mode": ("'download' or 'direct'", _choice(("download", "direct"))),
    "scratch_dir": ("a directory", _opt(_str)),
}

PLACEMENT_KEYS: dict[str, tuple[str, Any]] = {
    "device": ("'auto', 'gpu' or 'cpu'", _choice(("auto", "gpu", "cpu"))),
    "gpus_per_worker": ("an integer >= 1", _int(1)),
    "gpu_sharing": ("'round_robin' or 'exclusive'", _choice(("round_robin", "exclusive"))),
    "cpus_per_worker": ("an integer >= 0 (0 = split evenly)", _int(0)),
    "pin_cpus": ("true or false", _bool),
}



def _leaders(v: Any) -> int | str:
    if v == "auto":
        return v
    return _int(0)(v)


DISPATCH_KEYS: dict[str, tuple[str, Any]] = {
    "ranks_per_leader": ("'auto' (a relay rank per node once there are 2+ nodes or 64+ ranks), 0 (every "
                         "rank talks to rank 0) or an integer N (a relay every N ranks)", _leaders),
    "speculative": ("true or false (idle workers re-run the slowest running mini-batch at the tail)", _bool),
}

# where a key that belongs to another table is found: a targeted hint
_MISPLACED = {**{k: "input" for k in INPUT_KEYS if k not in TOP_LEVEL}, **{k: "placement" for k in PLACEMENT_KEYS},
              **{k: "dispatch" for k in DISPATCH_KEYS}}


def _raise():
    raise ValueError


def find_typo(key: str, valid: list[str]) -> str:
    """' — did you mean X?' for the nearest valid key (pypa/build's _find_typo)."""
    import difflib
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.7)
    return f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(sorted(valid))}"


def _check_table(src: str, prefix: str, data: Mapping[str, Any], schema: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if key not in schema:
            hint = ""
            if not prefix and key in _MISPLACED:
                hint = f"; it belongs in the [{_MISPLACED[key]}] table"
            raise ConfigError(f"{src}: unknown key '{name}'{hint or find_typo(key, list(schema))}")
        expected, check = schema[key]
        if check is None:
            out[key] = value
            continue
        try:
            out[key] = check(value)
        except (ValueError, TypeError) as exc:
            detail = f" ({exc})" if str(exc) else ""
            raise ConfigError(f"{src}: key '{name}': expected {expected}, found {value!r}{detail}") from None
    return out


# ---------------------------------------------------------------- overrides

def parse_override(text: str) -> tuple[list[str], Any]:
    """'input.kind=file' → (['input', 'kind'], 'file'); values are typed like TOML values."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set mini_batch_size=1")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text!r}: the key is empty")
    import tomllib        # here and below: rank 0 reads the job file; the others get it by bcast
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], sets: list[str], inputs: list[str]) -> dict[str, Any]:
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for text in sets:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {text!r}: '{part}' is not a table")
        node[path[-1]] = value
    if inputs:
        data.setdefault("input", {})["paths"] = list(inputs)
    return data


# ---------------------------------------------------------------- loading

def load_config(job_file: str | os.PathLike, sets: list[str] = (), inputs: list[str] = (),
                check_files: bool = True) -> JobConfig:
    """Read, override and validate a job file. Raises ConfigError with a one-line message."""
    import tomllib
    path = Path(job_file)
    src = str(job_file)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{src}: no such job file; check the path (e.g. prs-mpi run scripts/examples/hello/job.toml)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{src}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{src}: cannot read the job file: {exc.strerror}") from None
    data = apply_overrides(raw, list(sets), list(inputs))
    return build_config(data, path.resolve(), src, check_files)


def build_config(data: Mapping[str, Any], job_path: Path, src: str, check_files: bool = True) -> JobConfig:
    top = _check_table(src, "", data, TOP_LEVEL)
    input_raw = top.pop("input", None)
    if not isinstance(input_raw, Mapping):
        raise ConfigError(f"{src}: missing [input] table; add e.g. [input] kind = \"file\" paths = [\"data/*.png\"]")
    inp = _check_table(src, "input.", input_raw, INPUT_KEYS)
    if not inp.get("paths"):
        raise ConfigError(f"{src}: key 'input.paths': expected {INPUT_KEYS['paths'][0]}, found nothing; "
                          "set it in the job file or pass --input PATH")
    placement_raw = top.pop("placement", {})
    if not isinstance(placement_raw, Mapping):
        raise ConfigError(f"{src}: key 'placement': expected a table [placement], found {placement_raw!r}")
    placement = PlacementConfig(**_check_table(src, "placement.", placement_raw, PLACEMENT_KEYS))
    dispatch_raw = top.pop("dispatch", {})
    if not isinstance(dispatch_raw, Mapping):
        raise ConfigError(f"{src}: key 'dispatch': expected a table [dispatch], found {dispatch_raw!r}")
    top.update(_check_table(src, "dispatch.", dispatch_raw, DISPATCH_KEYS))
    if "entry_script" not in top:
        raise ConfigError(f"{src}: missing key 'entry_script'; add e.g. entry_script = \"score.py\"")

    base = job_path.parent
    kind = inp.get("kind", "file")
    top["mini_batch_size"] = _mini_batch_size(src, kind, top.get("mini_batch_size"))
    source_dir = (base / top.pop("source_directory", ".")).resolve()
    output_dir = (base / top.pop("output_dir", f"runs/{job_path.stem}")).resolve()
    inp["paths"] = tuple(_resolve(p, base) for p in inp["paths"])
    if inp.get("scratch_dir"):
        inp["scratch_dir"] = _resolve(inp["scratch_dir"], base)
    top["models"] = {k: _resolve(v, base) for k, v in top.get("models", {}).items()}
    top["side_inputs"] = {k: _resolve(v, base) for k, v in top.get("side_inputs", {}).items()}
    for key in ("arguments", "partition_keys"):
        if key in top:
            top[key] = tuple(top[key])
    cfg = JobConfig(job_file=str(job_path), source_directory=str(source_dir), output_dir=str(output_dir),
                    input=InputConfig(**inp), placement=placement, **top)
    _cross_checks(src, cfg)
    if check_files:
        check_entry_script(src, cfg)
        check_local_paths(src, cfg)
    return cfg


def _resolve(p: str, base: Path) -> str:
    if p.startswith("@"):
        return "@" + _resolve(p[1:], base)
    if is_url(p):
        return p
    if p.startswith("file://"):
        p = p[len("file://"):]
    return str((base / os.path.expanduser(p)).resolve()) if not os.path.isabs(p) else os.path.normpath(p)


def _mini_batch_size(src: str, kind: str, value: Any) -> int:
    if kind == "file":
        if value is None:
            return 10
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{src}: key 'mini_batch_size': expected a positive file count for file input, "
                              f"found {value!r}")
        return value
    try:
        return parse_size("1MB" if value is None else value)
    except ValueError as exc:
        raise ConfigError(f"{src}: key 'mini_batch_size': {exc} (tabular input takes a byte size)") from None


def _cross_checks(src: str, cfg: JobConfig) -> None:
    if cfg.partition_keys and cfg.input.kind != "tabular":
        raise ConfigError(f"{src}: key 'partition_keys' needs tabular input (input.kind = \"tabular\"); "
                          "for file input use input.partition_format")
    if cfg.input.partition_format and cfg.input.kind != "file":
        raise ConfigError(f"{src}: key 'input.partition_format' needs file input; for tables use partition_keys")
    if cfg.speculative and (cfg.output_action != "append_row" or cfg.isolation != "process"):
        raise ConfigError(f"{src}: key 'dispatch.speculative' needs output_action = \"append_row\" and "
                          f"isolation = \"process\", found {cfg.output_action!r} and {cfg.isolation!r}: a copy run "
                          "twice would repeat the script's own output, and only a child process can be stopped; "
                          "set speculative = false")
    if "/" in cfg.append_row_file_name or cfg.append_row_file_name in (".", ".."):
        raise ConfigError(f"{src}: key 'append_row_file_name': expected a plain file name, "
                          f"found {cfg.append_row_file_name!r}")


def check_local_paths(src: str, cfg: JobConfig) -> None:
    """Models and side inputs given as local paths exist (URLs are fetched, with retries, later)."""
    for table in ("models", "side_inputs"):
        for name, path in getattr(cfg, table).items():
            if not is_url(path) and not os.path.exists(path):
                raise ConfigError(f"{src}: key '{table}.{name}': no such file or directory {path}; "
                                  "paths are relative to the job file")


def check_entry_script(src: str, cfg: JobConfig) -> None:
    """The entry script exists, parses, and defines run() — checked without importing it."""
    path = cfg.entry_script_path
    if not os.path.isdir(cfg.source_directory):
        raise ConfigError(f"{src}: key 'source_directory': no such directory {cfg.source_directory}")
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError(f"{src}: key 'entry_script': no such file {path}; "
                          "entry_script is relative to source_directory") from None
    except OSError as exc:
        raise ConfigError(f"{src}: key 'entry_script': cannot read {path}: {exc.strerror}") from None
    try:
        tree = ast.parse(text, filename=path)
    except SyntaxError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: the entry script has a syntax error: {exc.msg}") from None
    names = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    names |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    names |= {a.asname or a.name for n in tree.body if isinstance(n, ast.ImportFrom) for a in n.names}
    if "run" not in names:
        raise ConfigError(f"{path}: the entry script defines no run(mini_batch) function; "
                          "define def run(mini_batch): ... returning one element per input that succeeded")
