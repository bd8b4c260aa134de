"""refmask: the reference specification of Transformer attention masks and attention outputs.

``refmask.masks`` is the mask algebra; ``refmask.convert`` translates masks to and from the
peers' representations; ``refmask.render`` draws them. Nothing here imports a framework.
"""

from . import masks
from ._version import package_version

__version__: str = package_version()  # single source: pyproject.toml
SPEC_VERSION = "0.1"

__all__ = ["SPEC_VERSION", "__version__", "masks"]
