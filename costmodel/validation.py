"""Deprecated alias of :mod:`costmodel.published`, kept for one release.

The comparison of the model with published and measured numbers moved to
:mod:`costmodel.published`; import from there. ``costmodel.validation`` re-exports the same
objects and ``python -m costmodel.validation`` still prints the same table.
"""

from __future__ import annotations

from costmodel import published as _published
from costmodel.published import *  # noqa: F403
from costmodel.published import __all__  # noqa: F401


def __getattr__(name: str):
    # the private helpers too, as before the move
    try:
        return getattr(_published, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


if __name__ == "__main__":  # pragma: no cover
    print(_published.markdown_table())
    print()
    print(_published.summary_table())
