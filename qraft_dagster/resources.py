"""Where Dagster gets Qraft's real services: one resource built from the config directory."""


from functools import cached_property

from dagster import ConfigurableResource

from qraft_core.runtime import Runtime


class QraftResource(ConfigurableResource):  # type: ignore[misc]
    """Configuration, store and settings for assets and sensors."""

    config_dir: str = "config"

    @cached_property
    def runtime(self) -> Runtime:
        return Runtime.load(self.config_dir)
