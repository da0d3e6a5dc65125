"""Host computations for eager libraries: NumPy in, the caller's library and device out."""
from __future__ import annotations

from typing import Any, Callable, Sequence


def make_host_call(to_numpy: Callable[[Any], Any], from_numpy: Callable[[Any, Any], Any]):
    """``host_call(fn, arrays, like, out_specs)``: run ``fn`` on NumPy copies of ``arrays`` and
    bring its NumPy outputs back beside ``like`` (``out_specs``, (shape, dtype) pairs, serve
    traced libraries; eager ones keep what ``fn`` returns)."""

    def host_call(fn: Callable[..., Sequence[Any]], arrays: Sequence[Any], like: Any,
                  out_specs: Sequence[Any]):
        outs = fn(*[to_numpy(x) for x in arrays])
        return tuple(from_numpy(o, like) for o in outs)

    return host_call
