"""Every error Gatehouse raises on purpose derives from GatehouseError.

The exception type says what happens next:
- DeviceNotReady: transient; the supervisor retries with backoff.
- DeviceMisconfigured, AuthFailed: a person must act; the supervisor raises an alert at once
  and keeps retrying with its backoff (at most restart_max_s apart), so that a fix on site (a
  reader reset to its key, a cable) is picked up without restarting the gateway.
- ConfigError: the configuration file is wrong; the CLI prints it and exits 2.
"""


class GatehouseError(Exception):
    """Root of every deliberate Gatehouse error."""


class ConfigError(GatehouseError):
    """The configuration is invalid; the message is written for the installer."""


class SecretUnavailable(ConfigError):
    """A `${NAME}` the configuration refers to is not set, or this user cannot read its file."""


class DeviceNotReady(GatehouseError):
    """A device did not answer or went away; retry later."""


class DeviceMisconfigured(GatehouseError):
    """A device answers but not as configured; retrying will not help."""


class AuthFailed(GatehouseError):
    """A key or credential was refused (reader secure channel, broker, command signature)."""


class StoreError(GatehouseError):
    """The local store cannot do what was asked."""


class StoreFull(StoreError):
    """The disk or the store's quota is exhausted and nothing more may be evicted."""


class ModelError(GatehouseError):
    """An inference model is missing, does not match its checksum, or cannot be loaded."""


class UsageError(GatehouseError):
    """A command was called with arguments that cannot work; the message says the right form."""
