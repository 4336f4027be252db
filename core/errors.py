"""The errors a user can act on. Entry scripts print them as one line (core/cli.py), never a traceback."""
from __future__ import annotations


class ToolkitError(Exception):
    """An error the user can act on. Entry scripts print it as one line and exit with status 2."""


class ImageDecodeError(ToolkitError, ValueError):
    """A file that cannot be turned into pixels; the message says why in one line."""


class InputWarning(UserWarning):
    """Input that was used with a stated fallback (a malformed DICOM window, say); shown as one line."""
