"""Exceptions raised by the Overlord client.

Every error from the C++ client is an :class:`OverlordError`. Its subclass
follows the ``overlord::errc`` code (common/error.hpp), and each subclass
also derives from the builtin exception a caller would catch for that kind
of failure, so ``except TimeoutError`` catches :class:`overlord.TimeoutError`.
"""

import builtins

from . import _overlord


class OverlordError(Exception):
    """Base class of the client's errors.

    ``code`` is the ``overlord::errc`` name, such as ``"timeout"``, and
    ``str(error)`` is the C++ message.
    """

    code = "internal"


class InvalidConfigError(OverlordError, ValueError):
    """A client option or the job configuration is invalid."""

    code = "invalid_config"


class InvalidInputError(OverlordError, ValueError):
    """A reply or input record is malformed."""

    code = "invalid_input"


class OverlordIOError(OverlordError, OSError):
    """The file system or a peer failed (ZeroMQ errors included)."""

    code = "io_error"


class NotFoundError(OverlordError, LookupError):
    """A step, file, source or key does not exist, or no longer exists.

    The constructor raises it for a step that it has already served, for
    example after ``load_state_dict`` to an earlier step.
    """

    code = "not_found"


class TimeoutError(OverlordError, builtins.TimeoutError):
    """No batch or planner reply arrived within the client's timeout."""

    code = "timeout"


class UnavailableError(OverlordError):
    """The service is shutting down or not ready yet."""

    code = "unavailable"


class InternalError(OverlordError, RuntimeError):
    """A bug in Overlord. Report it with the message."""

    code = "internal"


ERROR_CLASSES = {
    cls.code: cls
    for cls in (InvalidConfigError, InvalidInputError, OverlordIOError,
                NotFoundError, TimeoutError, UnavailableError, InternalError)
}

# Key 0 is the fallback for codes this version does not know.
_overlord.register_error_classes(
    {0: OverlordError,
     **{value: ERROR_CLASSES[name]
        for value, name in _overlord.errc_names().items()}})
