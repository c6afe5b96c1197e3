"""The error hierarchy used at ccmon's edges; messages say what was wrong and what to do."""


class CcmonError(Exception):
    """Base class of every error ccmon raises on purpose."""


class ConfigError(CcmonError):
    """The settings or the queue YAML are invalid."""


class InvalidEvent(CcmonError):
    """An event does not satisfy contract v1."""


class StoreUnavailable(CcmonError):
    """Redis cannot be reached or refused a command."""


class BrokerUnavailable(CcmonError):
    """The Kafka-protocol broker cannot be reached."""


class ServiceStartError(CcmonError):
    """An embedded service (broker or Redis) failed to start."""
