"""A degradation written down: :class:`Op` (one operator and its parameters) and :class:`Recipe`.

Why a module of its own: recipes are what the sampler (:mod:`degradations`) produces, what the
operators (:mod:`operators`) consume, what the run folder logs (``recipes.jsonl``) and what a
replay reads back; none of those should have to import the others to speak about a recipe.

Size conventions of ``resize`` ops (both replay exactly):

* with ``back_mode``: the size-preserving variant, scale by ``scale`` and straight back;
* without it: Real-ESRGAN's variable-size chain, the image takes ``scale`` x the size of the
  input of the whole chain and keeps it through the next ops; the final step's ``resize`` with
  ``scale=1`` brings it back to the input size (Real-ESRGAN's "resize back").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable


@dataclass(frozen=True)
class Op:
    """One operator with its parameters; ``stage`` is the pass it belongs to (0: the final step)."""

    name: str  # blur | resize | noise | jpeg
    params: tuple[tuple[str, Any], ...]
    stage: int

    @property
    def p(self) -> dict[str, Any]:
        return dict(self.params)

    def describe(self) -> str:
        p = self.p
        if self.name == "blur":
            k = p["kernel"]
            if k == "sinc":
                return f"sinc k{p['size']} wc={p['cutoff']:g}pi"
            s = f"{k} k{p['size']} s={p['sigma_x']:g}"
            if "aniso" in k:
                s += f"/{p['sigma_y']:g} th={p['theta']:g}"
            if "beta" in p:
                s += f" b={p['beta']:g}"
            return s
        if self.name == "resize":
            if "back_mode" in p:
                return f"resize x{p['scale']:g} {p['mode']}/{p['back_mode']}"
            return f"resize to x{p['scale']:g} {p['mode']}" if self.stage else f"resize back {p['mode']}"
        if self.name == "noise":
            grey = " grey" if p["gray"] else ""
            if p["kind"] == "gaussian":
                return f"gauss s={p['sigma']:g}{grey}"
            return f"poisson x{p['scale']:g}{grey}"
        if self.name == "jpeg":
            return f"jpeg q={p['quality']}"
        return f"{self.name} {p}"


@dataclass(frozen=True)
class Recipe:
    """A sampled degradation: its operators in the order they run, plus how it was drawn."""

    ops: tuple[Op, ...]
    order: int = 1
    shuffled: tuple[bool, ...] = ()

    def key(self) -> tuple:
        """What makes two recipes the same degradation (used to insist on d1 != d2)."""
        return tuple((o.name, o.params) for o in self.ops)

    def describe(self, sep: str = " > ") -> str:
        return sep.join(o.describe() for o in self.ops) if self.ops else "(identity)"

    def to_dict(self) -> dict:
        return {"order": self.order, "shuffled": list(self.shuffled),
                "ops": [{"op": o.name, "stage": o.stage, **o.p} for o in self.ops]}

    @classmethod
    def from_dict(cls, d: dict) -> "Recipe":
        ops = []
        for item in d["ops"]:
            item = dict(item)
            name, stage = item.pop("op"), int(item.pop("stage", 1))
            ops.append(Op(name, tuple(sorted(item.items())), stage))
        return cls(tuple(ops), int(d.get("order", 1)), tuple(d.get("shuffled", ())))


def op(name: str, stage: int = 1, **params: Any) -> Op:
    """Build an op by hand, e.g. ``op("jpeg", quality=30)`` (tests, previews, replaying a log)."""
    return Op(name, tuple(sorted(params.items())), stage)


def recipe_of(ops: Iterable[Op]) -> Recipe:
    return Recipe(tuple(ops))
