"""User-facing errors: the command line prints their message as one line and exits 2."""


class HarnessError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class ProfileError(HarnessError):
    """A malformed architecture profile."""


class BuildError(HarnessError):
    """The C kernels could not be compiled or loaded."""


class UnsupportedISAError(HarnessError):
    """The host cannot execute the instruction set a profile asks for."""


class ShapeError(HarnessError, ValueError):
    """A convolution whose shapes, types or parameters do not fit together."""
