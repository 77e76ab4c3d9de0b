"""The base every configuration model inherits: strict, frozen, documented.

A misspelt key must fail, not vanish (extra="forbid"); a loaded configuration never changes
under a running gateway (frozen); every field carries a description, which feeds the JSON
Schema editors show and the error messages installers read.
"""

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, WithJsonSchema
from pydantic.fields import FieldInfo


class StrictModel(BaseModel):
    """Base of all configuration sections."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=False)


SECRET: dict[str, bool] = {"secret": True}
"""`json_schema_extra` of a setting that holds a secret (a key, a salt, a password): the file should
name it as ${NAME}, read from the credentials directory, and `devices add` warns when it is
written out instead."""


def is_secret(field: FieldInfo) -> bool:
    return isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get("secret") is True


ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
ID_RULE = "lower-case letters, digits, - and _, starting with a letter or digit, at most 63 characters"
"""What an id (a site's, a gateway's, a gate's, a device's, a zone's) may be: it names MQTT topic
levels and files, so no spaces, capitals or slashes."""


def _identifier(value: str) -> str:
    if not re.match(ID_PATTERN, value):
        raise ValueError(f"an id is {ID_RULE}, e.g. north-in")
    return value


Identifier = Annotated[
    str, AfterValidator(_identifier), WithJsonSchema({"type": "string", "pattern": ID_PATTERN})
]
"""An id field: checked with a message people read, not the bare pattern."""
