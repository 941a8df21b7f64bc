"""Errors a user can act on.

Every message names the offending path or value, what was found, what was expected and how
to fix it. The CLI prints ``error: <message>`` and exits with code 2; ``--debug`` shows the
traceback.
"""

from __future__ import annotations


class MedsegError(Exception):
    """Base class for every error caused by user input (files, configs, arguments).

    ``param``: the Python parameter the error is about (``"device"``, ``"output"``), when the
    message starts with it; the CLI then names the matching flag instead (:meth:`for_cli`).
    """

    def __init__(self, *args: object, param: str | None = None) -> None:
        super().__init__(*args)
        self.param = param

    def for_cli(self, flags: dict[str, str] | None = None) -> str:
        """The message with a leading parameter name replaced by its CLI flag (``device`` ->
        ``--device``; ``flags`` maps other spellings, e.g. ``{"inputs": "INPUTS"}``)."""
        text = str(self)
        if self.param and self.param.isidentifier() and text.startswith(self.param):
            default = "--" + self.param.replace("_", "-")
            flag = (flags or {}).get(self.param, default)
            return flag + text[len(self.param) :]
        return text


class InputNotFoundError(MedsegError):
    """A path given by the user does not exist or holds nothing readable."""


class UnsupportedFormatError(MedsegError):
    """A file or folder is not in a format medseg can read or write."""


class CorruptFileError(MedsegError):
    """A file exists but cannot be decoded (truncated, not what its extension says)."""


class DicomSeriesError(MedsegError):
    """A DICOM folder is ambiguous (several series) or inconsistent (missing slices, mixed sizes)."""


class DimensionError(MedsegError):
    """An array has the wrong number of dimensions (e.g. 4D where 3D is expected)."""


class GeometryMismatchError(MedsegError):
    """Two volumes that must share a voxel grid (image/mask, channels) do not."""


class OverwriteError(MedsegError):
    """An output would overwrite an input or an existing file without permission."""


class OutputWriteError(MedsegError):
    """The operating system refused to write an output (read-only or full disk, permission,
    a symbolic-link loop, a folder where a file belongs); ``path`` and ``errno`` say which."""

    def __init__(self, *args: object, path: str = "", errno: int | None = None) -> None:
        super().__init__(*args)
        self.path = path
        self.errno = errno


class DatasetError(MedsegError):
    """A training dataset is malformed (missing labels, bad manifest, inconsistent cases)."""


class ConfigError(MedsegError):
    """A config file or ``--set`` override has unknown keys or invalid values."""


class CheckpointError(MedsegError):
    """A checkpoint or exported model cannot be loaded or lacks required metadata."""


class ClusterError(MedsegError):
    """A compute cluster cannot run the job: Ray is not installed, the cluster does not
    answer, or its workers cannot see the output folder."""


class DicomwebError(MedsegError):
    """A DICOMweb server (PACS) is unreachable, refuses the credentials or a request, or
    holds nothing the command can use (no such study, no usable image series)."""


class UnknownNameError(MedsegError, KeyError):
    """A name looked up in a registry (model, loss, transform) does not exist."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


def first_line(err: BaseException, width: int = 200) -> str:
    """The first line of ``err``'s message, at most ``width`` characters ('' when it has
    none), for quoting a library's error inside a one-line medseg message."""
    lines = str(err).splitlines()
    return lines[0][:width] if lines else ""
