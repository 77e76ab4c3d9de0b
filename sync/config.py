"""The uplink's configuration section (`mqtt:`)."""

from typing import Literal

from pydantic import Field

from edge.config_base import SECRET, StrictModel


class TlsConfig(StrictModel):
    ca: str | None = Field(
        default=None,
        description="path of the CA certificate (PEM) that signed the broker's certificate",
    )
    cert: str | None = Field(default=None, description="path of this gateway's client certificate (PEM)")
    key: str | None = Field(default=None, description="path of this gateway's client key (PEM)")
    insecure_skip_verify: bool = Field(
        default=False, description="accept any broker certificate (testing only)"
    )


class MqttConfig(StrictModel):
    host: str = Field(default="127.0.0.1", description="broker host name or address")
    port: int = Field(default=1883, ge=1, le=65535, description="broker port (8883 for TLS)")
    protocol: Literal["5", "3.1.1"] = Field(default="5", description="MQTT protocol version")
    username: str | None = Field(default=None, description="broker user name")
    password: str | None = Field(
        default=None,
        description="broker password; write ${NAME} to read it from a secret",
        json_schema_extra=SECRET,
    )
    tls: TlsConfig | None = Field(default=None, description="TLS settings; absent means plain TCP")
    keepalive_s: int = Field(
        default=30,
        ge=5,
        le=3600,
        description="MQTT keepalive interval; nothing from the broker for 1.5 times this (a cable "
        "pulled, a broker frozen) ends the connection and the uplink reconnects",
    )
    connect_timeout_s: float = Field(
        default=5.0, gt=0, description="no CONNACK within this time counts as a failed connect"
    )
    topic_prefix: str = Field(default="gatehouse/v1", description="first levels of every topic")
    batch_size: int = Field(
        default=50, ge=1, le=1000, description="events per message when draining a backlog"
    )
    inflight_window: int = Field(
        default=20, ge=1, le=200, description="unacknowledged messages in flight at once"
    )
    max_rate_msgs_s: float = Field(
        default=200.0,
        gt=0,
        description="backlog drain rate limit in messages per second (of batch_size events); live alerts "
        "are not limited. The default, 10,000 events/s, is what one SQLite ingest worker sustains on a "
        "small machine: draining faster only queues telemetry at the broker ahead of new alerts",
    )
    reconnect_min_s: float = Field(default=1.0, gt=0, description="first reconnect delay")
    reconnect_max_s: float = Field(default=60.0, gt=0, description="longest reconnect delay")
    session_expiry_s: int = Field(
        default=86400,
        ge=0,
        description="how long the broker keeps this gateway's session (and queues its commands) "
        "while it is offline",
    )
    status_interval_s: float = Field(
        default=30.0, gt=0, description="how often the retained status (with metrics) is refreshed"
    )
    max_command_bytes: int = Field(
        default=1_048_576, ge=1024, description="larger commands are rejected as oversized"
    )
    max_command_lifetime_s: int = Field(
        default=86400,
        ge=1,
        description="longest expires_at - issued_at a command may ask for; also how long its "
        "nonce is remembered",
    )
    clock_skew_s: float = Field(
        default=30.0,
        ge=0,
        description="how far in the future a command's issued_at may be (clocks differ)",
    )
