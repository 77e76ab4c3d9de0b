"""The base every configuration model inherits: strict, frozen, documented.

A misspelt key must fail, not vanish (extra="forbid"); a loaded configuration never changes
under a running gateway (frozen); every field carries a description, which feeds the JSON
Schema editors show and the error messages installers read.
"""

from pydantic import BaseModel, ConfigDict
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
