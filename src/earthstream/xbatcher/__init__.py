"""A drop-in for xbatcher 0.4: the same batches, read by earthstream's engine.

Replace ``import xbatcher`` / ``xbatcher.BatchGenerator`` with
``earthstream.xbatcher.BatchGenerator``: same arguments, same xarray batches,
same ``len`` and indexing; a Zarr-backed Dataset is read from its store with
each chunk decoded once per pass.  The accessor is ``ds.es_batch.generator(...)``
(registered when this module is imported); earthstream does not take over
xbatcher's ``ds.batch`` (see :func:`register_accessor`).  Needs xarray; xbatcher
itself is not needed.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import xarray as xr

from ..errors import ConfigError
from ._generator import BatchGenerator
from ._schema import BatchPlan, plan_batches

__all__ = ["BatchAccessor", "BatchGenerator", "BatchPlan", "plan_batches", "register_accessor"]


class BatchAccessor:
    """``ds.es_batch.generator(*args, **kwargs)``: an earthstream :class:`BatchGenerator`
    of the Dataset or DataArray (as xbatcher's ``ds.batch.generator``)."""

    def __init__(self, xarray_obj: Any) -> None:
        self._obj = xarray_obj

    def generator(self, *args: Any, **kwargs: Any) -> BatchGenerator:
        """A :class:`BatchGenerator` of this object; arguments as its constructor's."""
        return BatchGenerator(self._obj, *args, **kwargs)


def register_accessor(name: str = "es_batch") -> None:
    """Register :class:`BatchAccessor` as ``Dataset.<name>`` and ``DataArray.<name>``.

    ``es_batch`` is registered on import.  Another name is an explicit opt-in,
    e.g. ``register_accessor("batch")`` to keep code that calls
    ``ds.batch.generator(...)`` unchanged once xbatcher is uninstalled.  A name
    xarray objects already have is refused, and so is ``"batch"`` while
    xbatcher is installed (importing it registers its own ``batch``, which
    would silently replace ours, or ours its).

    Raises
    ------
    ConfigError
        The name is taken.

    Examples
    --------
    >>> import xarray as xr
    >>> from earthstream.xbatcher import BatchAccessor, register_accessor
    >>> register_accessor()  # already there: a no-op
    >>> xr.Dataset.es_batch is BatchAccessor
    True
    """
    for cls in (xr.Dataset, xr.DataArray):
        existing = getattr(cls, name, None)
        if existing is BatchAccessor:
            continue
        if existing is not None:
            raise ConfigError(
                f"xarray.{cls.__name__} already has an attribute {name!r} "
                f"({getattr(existing, '__module__', '?')}.{getattr(existing, '__name__', '?')}); "
                "earthstream does not replace it. Use ds.es_batch.generator(...) or register "
                "another name."
            )
    if name == "batch" and importlib.util.find_spec("xbatcher") is not None:
        raise ConfigError(
            "xbatcher is installed, and importing it registers its own ds.batch accessor; "
            "earthstream does not take that name from it. Use ds.es_batch.generator(...), "
            "or earthstream.xbatcher.BatchGenerator(ds, ...), or uninstall xbatcher first."
        )
    for cls, register in (
        (xr.Dataset, xr.register_dataset_accessor),
        (xr.DataArray, xr.register_dataarray_accessor),
    ):
        if getattr(cls, name, None) is not BatchAccessor:
            register(name)(BatchAccessor)


register_accessor()
