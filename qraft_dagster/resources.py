"""Where Dagster gets Qraft's real services: one resource built from the config directory."""

from dagster import ConfigurableResource

from qraft_core.runtime import Runtime


class QraftResource(ConfigurableResource):  # type: ignore[misc]
    """Configuration, store and settings for assets and sensors."""

    config_dir: str = "config"

    @property
    def runtime(self) -> Runtime:
        # Loaded per use, so QRAFT_* overrides and config edits apply to the next run.
        return Runtime.load(self.config_dir)
