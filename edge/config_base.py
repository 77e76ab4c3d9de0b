"""The base every configuration model inherits: strict, frozen, documented.

A misspelt key must fail, not vanish (extra="forbid"); a loaded configuration never changes
under a running gateway (frozen); every field carries a description, which feeds the JSON
Schema editors show and the error messages installers read.
"""

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Base of all configuration sections."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=False)
