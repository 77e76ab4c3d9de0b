"""The gateway's side of the downlink: carries out verified commands. Access, pass and alert
commands go to the rules' executor; `snapshot` asks a camera for a frame and keeps it as an
attachment; `config.reload` validates the file and, when it is good, restarts the runtime on it."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from edge.allowlist import AllowList
from edge.errors import ConfigError, DeviceNotReady
from edge.rules.commands import CommandExecutor
from sync.commands import Command, ConfigReloadArgs, ErrorCode, SnapshotArgs
from sync.downlink import CommandRejected


class GatewayExecutor:
    """Implements `sync.downlink.Executor` for a running Gateway."""

    def __init__(self, gateway: Any) -> None:
        self.gateway = gateway
        self.rules_executor = CommandExecutor(
            gateway.rules, AllowList(gateway.store, gateway.config.site.salt, clock=gateway.clock)
        )

    async def execute(self, command: Command) -> dict[str, Any]:
        match command.args:
            case SnapshotArgs():
                return await self.snapshot(command.args)
            case ConfigReloadArgs():
                return await self.reload()
        return await self.rules_executor.execute(command)

    async def snapshot(self, args: SnapshotArgs) -> dict[str, Any]:
        camera = self.gateway.drivers.get(args.camera)
        if camera is None or not hasattr(camera, "snapshot"):
            known = sorted(d for d, driver in self.gateway.drivers.items() if hasattr(driver, "snapshot"))
            raise CommandRejected(
                f"no camera {args.camera!r} (cameras: {', '.join(known) or 'none'})",
                ErrorCode.REJECTED,
            )
        with tempfile.TemporaryDirectory() as folder:
            try:
                path = await asyncio.to_thread(camera.snapshot, Path(folder) / "snapshot.jpg")
            except DeviceNotReady as err:
                raise CommandRejected(str(err), ErrorCode.UNAVAILABLE) from err
            data = path.read_bytes()
        digest, size = await asyncio.to_thread(self.gateway.store.put_attachment, data)
        return {"camera": args.camera, "sha256": digest, "size": size}

    async def reload(self) -> dict[str, Any]:
        if self.gateway.config_source is None:
            raise CommandRejected("this gateway was not started from a file", ErrorCode.REJECTED)
        try:
            config = await self.gateway.reload_from_file()
        except ConfigError as err:
            raise CommandRejected(
                "the configuration file has errors; nothing changed", ErrorCode.INVALID, {"errors": str(err)}
            ) from err
        return {"reloading": True, "devices": len(config.devices), "gates": len(config.gates)}
