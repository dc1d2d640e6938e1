"""Fast pickling for the small frozen records that cross a pipe or MPI once per mini-batch.

A frozen slots dataclass unpickles through dataclasses' generic `__setstate__`, which looks up
the field list for every object; reducing to (class, field values) is several times cheaper.
"""
from __future__ import annotations

from typing import Any


class Compact:
    __slots__ = ()

    def __reduce__(self) -> tuple[Any, tuple]:
        return (type(self), tuple(getattr(self, name) for name in self.__slots__))
