"""The resize option of recipes and datasets: ``0``, ``N``, ``"<=N"`` or ``"WxH"``, parsed and described.

It sits in ``base/`` because a recipe's check (``components/heads.py``) and the image reader
(``data/images.py``) both read it.
"""

from __future__ import annotations

from biqabench.base.errors import BiqaError


class AtMost(int):
    """A resize to a shorter side of *at most* N px (``"<=N"``): larger images shrink to N, smaller
    ones stay as they are.  A CPU recipe reads real photos at a reduced size this way without
    upscaling the demo's 128 px images.  Prints (and keys caches) as ``<=N``."""

    def __repr__(self) -> str:
        return f"<={int(self)}"

    __str__ = __repr__


def parse_resize(value) -> int | tuple[int, int]:
    """A resize option: ``0`` (as stored), ``N`` (shorter side N px, aspect kept), ``"<=N"``
    (shorter side shrunk to N px when longer: :class:`AtMost`) or ``"WxH"`` (exactly W x H px, as
    the reference loaders' ``Resize((512, 512))`` for BID and FLIVE)."""
    if isinstance(value, AtMost):
        return value
    if isinstance(value, str) and value.strip().startswith("<="):
        try:
            n = int(value.strip()[2:])
        except ValueError:
            n = 0
        if n < 1:
            raise BiqaError(f"resize {value!r}: '<=N' needs a whole number of pixels N >= 1, e.g. '<=384'")
        return AtMost(n)
    if isinstance(value, (tuple, list)) and len(value) == 2:
        w, h = (int(v) for v in value)
    elif isinstance(value, str) and "x" in value.lower():
        try:
            w, h = (int(v) for v in value.lower().split("x"))
        except ValueError:
            raise BiqaError(f"resize {value!r} is not N (short side), <=N or WxH, e.g. 512, <=384 or 512x384") from None
    else:
        try:
            n = int(value or 0)
        except (TypeError, ValueError):
            raise BiqaError(f"resize {value!r} is not N (short side), <=N or WxH, e.g. 512, <=384 or 512x384") from None
        if n < 0:
            raise BiqaError(f"resize must be >= 0 (short side in pixels, 0 = as is), got {n}")
        return n
    if w < 1 or h < 1:
        raise BiqaError(f"resize {value!r}: width and height must be at least 1 px")
    return (w, h)


def describe_resize(value) -> str:
    """Words for a resize option (manifests and summaries)."""
    size = parse_resize(value)
    if isinstance(size, tuple):
        return f"resized to {size[0]}x{size[1]} px"
    if isinstance(size, AtMost):
        return f"short side at most {int(size)} px"
    return f"short side {size} px" if size else "as stored"
