"""Finds drivers by looking in the `drivers` package: each sub-package with a `config.py`
declares its device configs (a `kind` literal each) and its `device.py` the drivers for them.
Adding a driver touches one folder."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from functools import cache

import drivers
from drivers.base import DeviceConfig, Driver


@cache
def device_config_models() -> tuple[type[DeviceConfig], ...]:
    """Every device config class, found in `drivers/<package>/config.py`."""
    found: list[type[DeviceConfig]] = []
    for module_info in sorted(pkgutil.iter_modules(drivers.__path__), key=lambda m: m.name):
        if not module_info.ispkg:
            continue
        try:
            module = importlib.import_module(f"drivers.{module_info.name}.config")
        except ModuleNotFoundError as err:
            if err.name == f"drivers.{module_info.name}.config":
                continue
            raise
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if (
                issubclass(cls, DeviceConfig)
                and cls.__module__ == module.__name__
                and "kind" in cls.model_fields
            ):
                found.append(cls)
    return tuple(found)


def device_kinds() -> dict[str, type[DeviceConfig]]:
    """Every device kind (`osdp`, `camera`, …) with its configuration model."""
    return {model.model_fields["kind"].annotation.__args__[0]: model for model in device_config_models()}


def driver_for(config: DeviceConfig) -> type[Driver]:
    """The driver class for a device config, from the same package's `device.py`."""
    package = type(config).__module__.rsplit(".", 1)[0]
    module = importlib.import_module(f"{package}.device")
    for _, cls in inspect.getmembers(module, inspect.isclass):
        if issubclass(cls, Driver) and getattr(cls, "config_model", None) is type(config):
            return cls
    raise LookupError(f"no driver in {package}.device for {type(config).__name__}")
