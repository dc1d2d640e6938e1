"""Fast pickling for the small frozen records that cross a pipe or MPI once per mini-batch.

A frozen slots dataclass unpickles through dataclasses' generic `__setstate__`, which looks up
the field list for every object; reducing to (class, field values) is several times cheaper.
The field values are read with one cached `operator.attrgetter` per class (C, not a generator).
"""
from __future__ import annotations

import operator
from typing import Any, Callable

_GETTERS: dict[type, Callable[[Any], tuple]] = {}


def _getter(cls: type) -> Callable[[Any], tuple]:
    names = cls.__slots__
    if len(names) == 1:
        name = names[0]
        get: Callable[[Any], tuple] = lambda obj: (getattr(obj, name),)  # noqa: E731
    else:
        get = operator.attrgetter(*names)
    _GETTERS[cls] = get
    return get


class Compact:
    __slots__ = ()

    def __reduce__(self) -> tuple[Any, tuple]:
        cls = type(self)
        get = _GETTERS.get(cls) or _getter(cls)
        return (cls, get(self))
