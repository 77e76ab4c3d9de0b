"""Edits the configuration file the way a careful installer would by hand.

The file is read and written with ruamel.yaml's round trip, so comments, key order, quoting and
flow lists stay as they were and only the edited lines change. Every change is validated as a
whole configuration before anything is written, and the file is replaced atomically, keeping
its owner and mode (the service reads it as the `gatehouse` user)."""

from __future__ import annotations

import difflib
import io
import re
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from drivers.registry import device_kinds
from edge.config import GateConfig
from edge.config_loader import (
    SECRET_REFERENCE,
    anchor_paths,
    data_path,
    dotted,
    parse_config,
    read_config_text,
    resolve_secret,
    secret_not_set,
)
from edge.errors import ConfigError, SecretUnavailable
from edge.files import write_private

_KEY_LINE = r"^( *)[^\s#-][^\n]*:[ \t]*(?:#[^\n]*)?\n(?:[ \t]*(?:#[^\n]*)?\n)*"
_NESTED_MAPPING = re.compile(_KEY_LINE + r"( +)[^\s#-]", re.MULTILINE)
_BLOCK_SEQUENCE = re.compile(_KEY_LINE + r"( *)-( +)\S", re.MULTILINE)


class ConfigDocument:
    """One configuration file, loaded for editing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.original = read_config_text(path)
        self.yaml = YAML()
        self.yaml.preserve_quotes = True
        self.yaml.width = 4096
        try:
            self.data = self.yaml.load(self.original)
        except YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
            raise ConfigError(f"{where}: not valid YAML: {getattr(err, 'problem', None) or err}") from err
        if not isinstance(self.data, CommentedMap):
            raise ConfigError(f"{path}: the top level must be a mapping of sections (site:, gateway:, …)")
        self._keep_indentation()

    def _keep_indentation(self) -> None:
        """Write new lines indented as the file's own are (2-space mappings and list items two
        spaces in, as in the example configuration, when the file has none to go by)."""
        mapping, offset, sequence = 2, 2, 4
        nested = _NESTED_MAPPING.search(self.original)
        if nested:
            mapping = len(nested.group(2)) - len(nested.group(1))
        listed = _BLOCK_SEQUENCE.search(self.original)
        if listed:
            offset = len(listed.group(2)) - len(listed.group(1))
            sequence = offset + 1 + len(listed.group(3))
        self.yaml.indent(mapping=mapping, sequence=sequence, offset=offset)

    def text(self) -> str:
        out = io.StringIO()
        self.yaml.dump(self.data, out)
        return out.getvalue()

    def validated(self) -> Any:
        """The edited document as a GatehouseConfig; ConfigError naming what is wrong with it."""
        return parse_config(self.text(), f"{self.path} (as changed)", self.path.resolve().parent)

    def save(self) -> None:
        write_private(self.path, self.text())

    def _list(self, key: str) -> CommentedSeq:
        value = self.data.get(key)
        if value is None:
            value = self.data[key] = CommentedSeq()
        if not isinstance(value, CommentedSeq):
            raise ConfigError(f"{self.path}: '{key}' must be a list")
        if not value:
            value.fa.set_block_style()
        return value

    def gate(self, gate_id: str) -> CommentedMap:
        gates = [gate for gate in self.data.get("gates") or () if isinstance(gate, CommentedMap)]
        for gate in gates:
            if gate.get("id") == gate_id:
                return gate
        ids = [str(gate.get("id")) for gate in gates]
        near = difflib.get_close_matches(gate_id, ids, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else f" (configured: {', '.join(ids) or 'none'})"
        raise ConfigError(f"no gate {gate_id!r} in {self.path}{hint}")

    def serial_line_of(self, settings: dict[str, Any]) -> str | None:
        """When the new device names only the port of a serial line another device already uses,
        give it that device's serial settings (one port is opened once, with one set of settings)
        and return that device's id."""
        serial = settings.get("serial")
        if not isinstance(serial, dict) or set(serial) != {"port"}:
            return None
        for item in self.data.get("devices") or ():
            other = item.get("serial") if isinstance(item, dict) else None
            if isinstance(other, dict) and other.get("port") == serial["port"]:
                settings["serial"] = dict(other)
                return str(item.get("id"))
        return None

    def add_device(self, settings: dict[str, Any], gate_id: str | None) -> Any:
        """Append a device to `devices:` and, with `gate_id`, name it in that gate's barrier,
        readers or cameras (whichever its kind fills). Returns the device's validated model."""
        device = checked_device(settings)
        existing = [item.get("id") for item in self.data.get("devices") or () if isinstance(item, dict)]
        if device.id in existing:
            raise ConfigError(f"device {device.id!r} is already in {self.path}; pick another id")
        self._list("devices").append(_block(settings))
        if gate_id is not None:
            gate = self.gate(gate_id)
            slot = type(device).gate_slot
            if slot == "barrier":
                if gate.get("barrier") not in (None, device.id):
                    raise ConfigError(
                        f"gate {gate_id!r} already has the barrier {gate['barrier']!r}; remove that "
                        f"device first (gatehouse devices remove {gate['barrier']})"
                    )
                gate["barrier"] = device.id
            else:
                listed = gate.get(slot)
                if listed is None:
                    listed = gate[slot] = CommentedSeq()
                    listed.fa.set_flow_style()
                listed.append(device.id)
        return device

    def add_gate(self, settings: dict[str, Any]) -> GateConfig:
        """Append a gate (without devices: `devices add --gate` names them) to `gates:`."""
        gate = checked(GateConfig, settings, f"gate {settings.get('id')!r}")
        if any(item.get("id") == gate.id for item in self.data.get("gates") or () if isinstance(item, dict)):
            raise ConfigError(f"gate {gate.id!r} is already in {self.path}; pick another id")
        self._list("gates").append(_block(settings))
        return gate

    def remove_gate(self, gate_id: str) -> list[str]:
        """Take a gate out of `gates:`; returns the devices it named, which stay configured."""
        gate = self.gate(gate_id)
        self.data["gates"].remove(gate)
        named = [gate["barrier"]] if gate.get("barrier") else []
        named += [device for slot in ("readers", "cameras") for device in gate.get(slot) or ()]
        return [str(device) for device in named]

    def remove_device(self, device_id: str) -> list[str]:
        """Take a device out of `devices:` and out of every gate naming it; returns those gates."""
        devices = self.data.get("devices") or []
        ids = [str(item.get("id")) for item in devices if isinstance(item, dict)]
        if device_id not in ids:
            near = difflib.get_close_matches(device_id, ids, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else f" (configured: {', '.join(ids) or 'none'})"
            raise ConfigError(f"no device {device_id!r} in {self.path}{hint}")
        for index, item in enumerate(devices):
            if isinstance(item, dict) and item.get("id") == device_id:
                del devices[index]
                break
        touched = []
        for gate in self.data.get("gates") or ():
            if not isinstance(gate, CommentedMap):
                continue
            named = False
            if gate.get("barrier") == device_id:
                del gate["barrier"]
                named = True
            for slot in ("readers", "cameras"):
                listed = gate.get(slot)
                while isinstance(listed, list) and device_id in listed:
                    listed.remove(device_id)
                    named = True
            if named:
                touched.append(str(gate.get("id")))
        return touched


def copy_with_state_dir(source: Path, target: Path, state_dir: Path) -> None:
    """Write the configuration file `source` to `target` with its state directory set to
    `state_dir` and its other relative paths (TLS, model files) made absolute, so that the copy
    reads as the original did from wherever it lies: comments and secrets' references kept."""
    document = ConfigDocument(source)
    anchor_paths(document.data, source.resolve().parent)
    gateway = document.data.get("gateway")
    if not isinstance(gateway, dict):
        raise ConfigError(f"{source}: no gateway: section to set the state directory in")
    gateway["state_dir"] = str(state_dir.resolve())
    write_private(target, document.text())


def checked_device(settings: dict[str, Any]) -> Any:
    """The device these settings describe, validated alone so that each problem is named by its
    setting (`serial.port`, `address`) rather than by a line of a file not yet written."""
    kinds = device_kinds()
    kind = settings.get("kind")
    if kind not in kinds:
        near = difflib.get_close_matches(str(kind), kinds, n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        raise ConfigError(f"unknown device kind {kind!r}; {hint}known: {', '.join(sorted(kinds))}")
    return checked(kinds[kind], settings, f"a device of kind {kind}")


def checked(model: type[Any], settings: dict[str, Any], what: str) -> Any:
    """`settings` validated as `model`, with the secrets they name (`${NAME}`) that can be found;
    ConfigError listing each problem by its setting, never showing a secret."""
    try:
        return TypeAdapter(model).validate_python(_with_secrets(settings))
    except ValidationError as err:
        lines = [f"{what} cannot be made from these settings:"]
        for error in err.errors():
            path = data_path(tuple(error["loc"]), settings)
            lines.append(f"  {dotted(path)}: {_problem(error, model, path, _given(settings, path))}")
        raise ConfigError("\n".join(lines)) from err


def _with_secrets(value: Any, path: tuple[str | int, ...] = ()) -> Any:
    """`value` with each `${NAME}` replaced by its secret; ConfigError naming the setting when a
    secret is not set."""
    if isinstance(value, dict):
        return {key: _with_secrets(item, (*path, key)) for key, item in value.items()}
    if isinstance(value, list):
        return [_with_secrets(item, (*path, index)) for index, item in enumerate(value)]
    if not isinstance(value, str):
        return value

    def secret(match: re.Match[str]) -> str:
        found = resolve_secret(match.group(1))
        if found is None:
            raise SecretUnavailable(f"{dotted(path)}: {secret_not_set(match.group(1))}")
        return found

    return SECRET_REFERENCE.sub(secret, value)


def _given(settings: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        try:
            settings = settings[part]
        except (KeyError, IndexError, TypeError):
            return None
    return settings


def _problem(error: Any, model: type[Any], path: tuple[str | int, ...], given: Any) -> str:
    owner: Any = model
    for part in path[:-1]:
        field = getattr(owner, "model_fields", {}).get(part)
        owner = field.annotation if field is not None else None
    fields = getattr(owner, "model_fields", {})
    name = path[-1] if path else ""
    if error["type"] == "missing":
        described = fields.get(name)
        about = f" ({described.description})" if described is not None and described.description else ""
        return f"required; give it as {dotted(path)}=VALUE{about}"
    if error["type"] == "extra_forbidden":
        near = difflib.get_close_matches(str(name), list(fields), n=1)
        return "not a setting of this kind; " + (
            f"did you mean {near[0]!r}?" if near else f"known: {', '.join(fields)}"
        )
    secret = isinstance(given, str) and SECRET_REFERENCE.search(given)
    shown = "" if isinstance(given, dict | list) or secret else f" (got {given!r})"
    return f"{error['msg'].removeprefix('Value error, ').rstrip('.')}{shown}"


def _block(settings: dict[str, Any]) -> CommentedMap:
    """A list item as the example configuration writes one: in the order given, one key per
    line, nested settings (serial, plates, …) as one flow mapping each."""
    return CommentedMap((key, _flow(value)) for key, value in settings.items())


def _flow(value: Any) -> Any:
    if isinstance(value, dict):
        mapping = CommentedMap((key, _flow(item)) for key, item in value.items())
        mapping.fa.set_flow_style()
        return mapping
    if isinstance(value, list):
        sequence = CommentedSeq(_flow(item) for item in value)
        sequence.fa.set_flow_style()
        return sequence
    return value
