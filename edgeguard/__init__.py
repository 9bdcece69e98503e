"""edgeguard: run a provider's classifier on the device, and share only safe outputs."""

from edgeguard.errors import *  # noqa: F401,F403
from edgeguard.errors import __all__ as _error_names

__version__ = "0.1.0"

__all__ = [*_error_names]
