"""The control service's one error that callers catch (orchestrator.cli), apart so that catching it loads
neither the service nor gRPC."""


class ControlError(OSError):
    """The control service could not start where it was asked to listen."""
