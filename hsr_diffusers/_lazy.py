"""Names a package exports but imports on first use (PEP 562), so that `hsr --help` does not import torch."""

import importlib
import sys


def lazy_exports(module_name: str, exports: dict[str, str]):
    """
    The module-level `__getattr__` and `__dir__` of package `module_name`, which import each name of `exports`
    (`{name: defining module}`) the first time it is read and keep it in the package's namespace.
    """

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        setattr(sys.modules[module_name], name, value)  # later look-ups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[module_name])) | set(exports))

    return __getattr__, __dir__
