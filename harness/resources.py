"""Files the tool ships and reads at run time: the C kernel sources and the architecture
profiles. In an installed package they sit inside it (the build maps the top-level
``kernels_c/`` and ``arch_profiles/`` into ``harness/``); in a checkout, beside it."""

from __future__ import annotations

from pathlib import Path

from harness.errors import HarnessError

_PACKAGE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """The shipped directory ``name`` (``kernels_c`` or ``arch_profiles``)."""
    for candidate in (_PACKAGE / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise HarnessError(f"the installation lacks its {name}/ directory (looked in {_PACKAGE} and "
                       f"{_PACKAGE.parent}); reinstall the package")


def kernel_dir() -> Path:
    return data_dir("kernels_c")


def profile_dir() -> Path:
    return data_dir("arch_profiles")


def source_checkout() -> Path | None:
    """The git checkout the package runs from, if any (for the run's metadata)."""
    root = _PACKAGE.parent
    return root if (root / ".git").exists() else None
