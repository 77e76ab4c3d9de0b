"""Reads the YAML configuration and turns every problem into a message an installer can act on:
file, line and column, the key path, what was expected, and a near-miss suggestion."""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from edge.config import DEFAULT_CREDENTIALS_DIR, GatehouseConfig, MisplacedValue
from edge.errors import ConfigError, SecretUnavailable

Path_ = tuple[str | int, ...]
SECRET_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def resolve_secret(name: str) -> str | None:
    """A secret by name: the environment first, then systemd's credentials directory, or outside
    systemd the folder `gatehouse init` writes them to (so that `sudo gatehouse config check`
    sees what the service will). None when it is in none of them; SecretUnavailable (naming the
    secret and its file) when its file cannot be read."""
    if name in os.environ:
        return os.environ[name]
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if not credentials:
        if not DEFAULT_CREDENTIALS_DIR.is_dir():
            return None
        credentials = str(DEFAULT_CREDENTIALS_DIR)
    candidate = Path(credentials) / name
    try:
        return candidate.read_text(encoding="utf-8").strip() if candidate.is_file() else None
    except PermissionError as err:
        raise SecretUnavailable(
            f"secret ${{{name}}} is not set for this user: {candidate} cannot be read (permission "
            "denied); run the command with sudo"
        ) from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"secret ${{{name}}}: {candidate} is not UTF-8 text ({err.reason})") from err
    except OSError as err:
        raise ConfigError(f"secret ${{{name}}}: {candidate} cannot be read ({err.strerror or err})") from err


def secret_not_set(name: str) -> str:
    """Why ${name} has no value, naming the file that was looked for, and what to do."""
    folder = os.environ.get("CREDENTIALS_DIRECTORY")
    candidate = Path(folder or DEFAULT_CREDENTIALS_DIR) / name
    if folder and os.environ.get("INVOCATION_ID"):  # a systemd service: its unit loads the secrets
        return (
            f"secret ${{{name}}} is not set: the unit loads no {name} (LoadCredential=); put the "
            f"secret in {DEFAULT_CREDENTIALS_DIR / name} (mode 0600), then run `sudo gatehouse "
            "service install` again and restart the service"
        )
    return (
        f"secret ${{{name}}} is not set: not in the environment, and no file {candidate}; put the "
        "secret in that file (mode 0600), or, if `gatehouse init --credentials-dir` put the secrets "
        "elsewhere, name that folder: CREDENTIALS_DIRECTORY=DIR before any gatehouse command, or "
        "--credentials-dir DIR after the ones that take it (config check, gates/devices add and "
        "remove, provision, doctor, service install)"
    )


class _Marks:
    """Where each value of the YAML document came from, and which values hold secrets (they are
    never echoed in an error)."""

    def __init__(self) -> None:
        self.by_path: dict[Path_, tuple[int, int]] = {}
        self.secret_paths: set[Path_] = set()

    def near(self, path: Path_) -> tuple[int, int] | None:
        for cut in range(len(path), -1, -1):
            mark = self.by_path.get(path[:cut])
            if mark:
                return mark
        return None


_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"


def _merged(
    node: yaml.MappingNode, path: Path_, marks: _Marks, source: str, ancestors: frozenset[int]
) -> dict[str, Any]:
    """The keys a mapping takes from YAML merge keys (`<<: *anchor` or `<<: [*a, *b]`); its own
    keys, read afterwards, win, and an earlier merged mapping wins over a later one. The merged
    keys' positions are the anchor's lines."""
    merged: dict[str, Any] = {}
    for key_node, value_node in node.value:
        if key_node.tag != _MERGE_TAG:
            continue
        sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
        for source_node in reversed(sources):
            if not isinstance(source_node, yaml.MappingNode):
                raise ConfigError(
                    f"{_where(source_node, path, source)}: '<<' merges a mapping (an alias such as "
                    "*reader) or a list of them"
                )
            merged.update(_to_python(source_node, path, marks, source, ancestors))
    return merged


def _short_tag(tag: str) -> str:
    return tag.replace("tag:yaml.org,2002:", "!!")


def _where(node: yaml.Node, path: Path_, source: str) -> str:
    return f"{source}:{node.start_mark.line + 1}:{node.start_mark.column + 1} {dotted(path)}"


def _to_python(
    node: yaml.Node, path: Path_, marks: _Marks, source: str, ancestors: frozenset[int] = frozenset()
) -> Any:
    marks.by_path[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if id(node) in ancestors:
        raise ConfigError(
            f"{_where(node, path, source)}: this alias refers to the value that contains it (a loop); "
            "write the value out instead"
        )
    inner = ancestors | {id(node)}
    if isinstance(node, yaml.MappingNode | yaml.SequenceNode):
        expected = _MAP_TAG if isinstance(node, yaml.MappingNode) else _SEQ_TAG
        if node.tag != expected:
            raise ConfigError(
                f"{_where(node, path, source)}: the tag {_short_tag(node.tag)} is not supported here; "
                "remove it"
            )
    if isinstance(node, yaml.MappingNode):
        merged = _merged(node, path, marks, source, inner)
        marks.by_path[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise ConfigError(
                    f"{_where(key_node, path, source)}: a key must be a plain name, not a "
                    f"{'list' if isinstance(key_node, yaml.SequenceNode) else 'mapping'}"
                )
            key = key_node.value
            if key in result:
                raise ConfigError(f"{_where(key_node, (*path, key), source)}: key appears twice")
            marks.by_path[(*path, key)] = (
                key_node.start_mark.line + 1,
                key_node.start_mark.column + 1,
            )
            result[key] = _to_python(value_node, (*path, key), marks, source, inner)
            marks.by_path[(*path, key)] = (
                key_node.start_mark.line + 1,
                key_node.start_mark.column + 1,
            )
        return {**merged, **result}
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(item, (*path, i), marks, source, inner) for i, item in enumerate(node.value)]
    try:
        value = yaml.SafeLoader("").construct_object(node, deep=True)
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(
            f"{_where(node, path, source)}: {problem}; remove the tag or quote the value"
        ) from err
    except (ValueError, TypeError, OverflowError) as err:
        raise ConfigError(
            f"{_where(node, path, source)}: {node.value!r} cannot be read as {_short_tag(node.tag)} ({err}); "
            "remove the tag or correct the value"
        ) from err
    if isinstance(value, str):
        value = _substitute(value, path, marks, source)
    return value


def _substitute(value: str, path: Path_, marks: _Marks, source: str) -> str:
    def replace(match: re.Match[str]) -> str:
        marks.secret_paths.add(path)
        line, col = marks.near(path) or (0, 0)
        try:
            secret = resolve_secret(match.group(1))
        except ConfigError as err:  # SecretUnavailable stays one: the doctor's advice depends on it
            raise type(err)(f"{source}:{line}:{col} {dotted(path)}: {err}") from err
        if secret is None:
            raise SecretUnavailable(f"{source}:{line}:{col} {dotted(path)}: {secret_not_set(match.group(1))}")
        return secret

    return SECRET_REFERENCE.sub(replace, value)


def dotted(path: Path_) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def data_path(loc: tuple[Any, ...], data: Any) -> Path_:
    """Pydantic's error location with the union tags (which are not keys in the file) removed."""
    path: list[str | int] = []
    node = data
    for part in loc:
        if (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and part < len(node)
        ):
            path.append(part)
            node = node[part]
        elif isinstance(node, dict) and isinstance(part, str) and part == node.get("kind"):
            continue
        else:
            path.append(part)
            node = None
    return tuple(path)


def _model_at(path: Path_, data: Any) -> type[BaseModel] | None:
    """The configuration model that owns the mapping at `path`, to suggest its field names."""
    from drivers.registry import device_config_models

    model: type[BaseModel] | None = GatehouseConfig
    node = data
    for part in path:
        if model is None:
            return None
        if isinstance(part, int):
            node = node[part] if isinstance(node, list) and part < len(node) else None
            continue
        field = model.model_fields.get(part)
        node = node.get(part) if isinstance(node, dict) else None
        if field is None:
            return None
        model = _model_of_annotation(field.annotation, node, device_config_models())
    return model


def _model_of_annotation(
    annotation: Any, node: Any, device_models: tuple[type[BaseModel], ...]
) -> type[BaseModel] | None:
    """The model an annotation stands for, choosing a union member by the data's `kind`."""
    candidates: list[type[BaseModel]] = []

    def collect(tp: Any) -> None:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            candidates.append(tp)
            return
        for arg in getattr(tp, "__args__", ()) or ():
            collect(arg)
        origin = getattr(tp, "__origin__", None)
        if origin is not None and getattr(tp, "__metadata__", None) is not None:
            collect(origin)

    collect(annotation)
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    sample = node[0] if isinstance(node, list) and node else node
    kind = sample.get("kind") if isinstance(sample, dict) else None
    for model in candidates:
        field = model.model_fields.get("kind")
        if field is not None and kind in getattr(field.annotation, "__args__", ()):
            return model
    return None


def _message(error: Any, data: Any, marks: _Marks, source: str) -> str:
    cause = error.get("ctx", {}).get("error")
    path = cause.path if isinstance(cause, MisplacedValue) else data_path(tuple(error["loc"]), data)
    line, col = marks.near(path) or (1, 1)
    where = f"{source}:{line}:{col} {dotted(path)}"
    if error["type"] == "extra_forbidden":
        owner = _model_at(path[:-1], data)
        known = list(owner.model_fields) if owner else []
        hint = difflib.get_close_matches(str(path[-1]), known, n=1)
        suggestion = (
            f"; did you mean '{hint[0]}'?" if hint else (f"; known keys: {', '.join(known)}" if known else "")
        )
        return f"{where}: unknown key '{path[-1]}'{suggestion}"
    if error["type"] == "missing":
        return f"{where}: required key is missing"
    if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
        from drivers.registry import device_kinds

        kinds = sorted(device_kinds())
        got = error.get("input", {}).get("kind") if isinstance(error.get("input"), dict) else None
        line, col = marks.near((*path, "kind")) or (line, col)
        where = f"{source}:{line}:{col} {dotted((*path, 'kind'))}"
        if got is None:
            return f"{where}: every device needs a kind; one of: {', '.join(kinds)}"
        hint = difflib.get_close_matches(str(got), kinds, n=1)
        suggestion = f"; did you mean '{hint[0]}'?" if hint else ""
        return f"{where}: unknown device kind '{got}'{suggestion} (known: {', '.join(kinds)})"
    got = error.get("input")
    hidden = isinstance(got, dict | list) or path in marks.secret_paths
    shown = "" if hidden else f" (got {got!r})"
    # pydantic puts "Value error, " before the messages of our own validators
    return f"{where}: {error['msg'].removeprefix('Value error, ').rstrip('.')}{shown}"


_PATH_KEYS: tuple[Path_, ...] = (
    ("gateway", "state_dir"),
    ("mqtt", "tls", "ca"),
    ("mqtt", "tls", "cert"),
    ("mqtt", "tls", "key"),
    ("inference", "plate_detector", "path"),
    ("inference", "plate_classifier", "path"),
    ("inference", "object_detector", "path"),
)


def anchor_paths(data: dict[str, Any], base: Path) -> None:
    """Make the relative paths of the file (state directory, TLS files, model files) relative to
    `base`, the file's own folder, rather than to wherever the command runs."""
    for *parents, key in _PATH_KEYS:
        node: Any = data
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(key), str) and node[key]:
            value = Path(node[key]).expanduser()
            if not value.is_absolute():
                node[key] = str(base / value)


def parse_config(text: str, source: str = "<config>", base: Path | None = None) -> Any:
    """Validate YAML text into a GatehouseConfig, or raise ConfigError with every problem.
    Relative paths in it are taken from `base` (the file's folder) when given."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"{where}: not valid YAML: {problem}") from err
    if root is None:
        raise ConfigError(f"{source}: the file is empty; start from config/example-compound.yaml")
    marks = _Marks()
    data = _to_python(root, (), marks, source)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}:1:1: the top level must be a mapping of sections (site:, gateway:, …)")
    if base is not None:
        anchor_paths(data, base)
    try:
        return GatehouseConfig.model_validate(data)
    except ValidationError as err:
        lines = [_message(error, data, marks, source) for error in err.errors()]
        raise ConfigError("\n".join(lines)) from err


def load_config(path: str | Path) -> Any:
    """Read and validate the configuration file at `path`; relative paths in it are relative to
    the file's folder."""
    file = Path(path)
    return parse_config(read_config_text(file), str(file), Path(os.path.abspath(file)).parent)


def read_config_text(file: Path) -> str:
    """The configuration file's text; ConfigError saying what to do when it cannot be read."""
    try:
        return file.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise ConfigError(
            f"{file}: no such file; create it with 'gatehouse init' or pass --config PATH"
        ) from err
    except PermissionError as err:
        raise ConfigError(f"{file}: permission denied; run as the gatehouse user or with sudo") from err
    except IsADirectoryError as err:
        raise ConfigError(f"{file}: is a directory; pass the YAML file itself with --config PATH") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"{file}: not UTF-8 text ({err.reason})") from err
    except OSError as err:
        raise ConfigError(f"{file}: cannot be read ({err.strerror or err})") from err
