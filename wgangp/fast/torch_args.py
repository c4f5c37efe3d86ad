"""Reading the arguments of an intercepted torch function.

A ``TorchFunctionMode`` receives a call as ``(args, kwargs)`` in whatever mix of
positional and keyword arguments the caller used; these helpers read one argument by
position or name and normalise the 2-D sizes ATen expects.
"""

from __future__ import annotations

from typing import Any


def arg(args: tuple, kwargs: dict, position: int, name: str, default: Any) -> Any:  # noqa: ANN401
    """The argument at ``position`` if it was passed positionally, else ``kwargs[name]``,
    else ``default``."""
    return args[position] if len(args) > position else kwargs.get(name, default)


def pair(value: Any) -> list[int]:  # noqa: ANN401
    """A 2-D size (stride, padding, kernel) as the ``[h, w]`` list ATen takes: an int ``v``
    is ``[v, v]``."""
    return [int(value), int(value)] if isinstance(value, int) else [int(v) for v in value]


__all__ = ["arg", "pair"]
