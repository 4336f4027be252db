"""cxr-jetson: chest X-ray pneumonia screening from training to an NVIDIA Jetson.

Installed, everything lives under this one name, so nothing generic (``data``, ``train``) lands in
site-packages: ``cxr_jetson.core`` (the torch-free foundation), ``cxr_jetson.networks`` (model
definitions), and the stages ``cxr_jetson.data``, ``cxr_jetson.train``, ``cxr_jetson.export`` and
``cxr_jetson.edge``. In the repository those are the top-level folders of the same names
(pyproject.toml maps them); a source checkout also runs without installing, because this package
then looks for them beside its own folder.
"""
from __future__ import annotations

import os
import re

_CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PYPROJECT = os.path.join(_CHECKOUT, "pyproject.toml")
_STAGES = ("core", "networks", "data", "train", "export", "edge")

# A checkout (pyproject.toml and the stage folders beside this package) resolves
# cxr_jetson.<stage> to <checkout>/<stage>; an installed copy has them inside this folder.
if os.path.isfile(_PYPROJECT) and all(os.path.isdir(os.path.join(_CHECKOUT, s)) for s in _STAGES):
    __path__.append(_CHECKOUT)  # type: ignore[name-defined]  # noqa: F821 (a package's own __path__)


def _version() -> str:
    """The installed distribution's version; in an uninstalled checkout, pyproject.toml's."""
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover (Python 3.8 has importlib.metadata)
        return "0+unknown"
    try:
        return version("cxr-jetson")
    except PackageNotFoundError:
        pass
    try:
        with open(_PYPROJECT, encoding="utf-8") as handle:
            found = re.search(r'^version\s*=\s*"([^"]+)"', handle.read(), re.MULTILINE)
    except OSError:
        found = None
    return found.group(1) if found else "0+unknown"


__version__ = _version()
