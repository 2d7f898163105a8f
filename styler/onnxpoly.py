"""Polynomials in an ONNX graph's batch N, height H and width W, and what
:mod:`styler.onnxshapes` knows of one tensor.

A dimension of a tensor is bounded by a :class:`Poly` (None where it is not
known), its element count by the product of its dimensions; a small 1-D
integer tensor (a shape, axes, indices) may carry bounds on its values too.
:class:`_Unbounded` is raised where a size cannot be bounded from the file.
"""

from __future__ import annotations

from dataclasses import dataclass

#: A monomial: the powers of (N, H, W).
Monomial = tuple[int, int, int]
_ONE: Monomial = (0, 0, 0)
_SYMBOLS = ("N", "H", "W")


class Poly:
    """A polynomial in N, H and W with rational coefficients (an upper bound
    on a dimension or an element count, for N, H, W >= 1)."""

    __slots__ = ("terms",)

    def __init__(self, terms: dict[Monomial, float] | None = None) -> None:
        self.terms = {m: c for m, c in (terms or {}).items() if c != 0}

    @staticmethod
    def const(value: float) -> Poly:
        return Poly({_ONE: float(value)})

    @staticmethod
    def symbol(axis: int) -> Poly:
        powers = [0, 0, 0]
        powers[axis] = 1
        return Poly({(powers[0], powers[1], powers[2]): 1.0})

    def constant(self) -> float | None:
        """The value of a polynomial without symbols; None for others."""
        if not self.terms:
            return 0.0
        if set(self.terms) == {_ONE}:
            return self.terms[_ONE]
        return None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Poly) and self.terms == other.terms

    def __hash__(self) -> int:
        return hash(frozenset(self.terms.items()))

    def __add__(self, other: Poly) -> Poly:
        terms = dict(self.terms)
        for m, c in other.terms.items():
            terms[m] = terms.get(m, 0.0) + c
        return Poly(terms)

    def __mul__(self, other: Poly) -> Poly:
        terms: dict[Monomial, float] = {}
        for m1, c1 in self.terms.items():
            for m2, c2 in other.terms.items():
                m = (m1[0] + m2[0], m1[1] + m2[1], m1[2] + m2[2])
                terms[m] = terms.get(m, 0.0) + c1 * c2
        return Poly(terms)

    def scale(self, factor: float) -> Poly:
        return Poly({m: c * factor for m, c in self.terms.items()})

    def upper(self, other: Poly) -> Poly:
        """A bound on max(self, other): the larger coefficient of each term
        (sound as every term is >= 0 for N, H, W >= 0)."""
        terms = dict(self.terms)
        for m, c in other.terms.items():
            terms[m] = max(terms.get(m, 0.0), c)
        for m in self.terms.keys() - other.terms.keys():
            terms[m] = max(terms[m], 0.0)
        return Poly(terms)

    def positive(self) -> Poly:
        """The terms with positive coefficients (a bound for N, H, W >= 0)."""
        return Poly({m: c for m, c in self.terms.items() if c > 0})

    def __str__(self) -> str:
        parts = []
        for m, c in sorted(self.terms.items(), reverse=True):
            names = [s if p == 1 else f"{s}^{p}" for s, p in zip(_SYMBOLS, m, strict=True) if p]
            number = f"{c:g}"
            parts.append(" x ".join(([number] if c != 1 or not names else []) + names))
        return " + ".join(parts) or "0"


def _product(dims: list[Poly]) -> Poly:
    total = Poly.const(1)
    for d in dims:
        total = total * d
    return total


Dims = list[Poly | None]


@dataclass
class Tensor:
    """What the walk knows of one tensor: its dimensions (None: the rank is
    not known), a bound on its element count, and for a small 1-D integer
    tensor (a shape, axes, indices) bounds on its values."""

    dims: Dims | None
    count: Poly
    values: list[Poly] | None = None
    #: Whether ``values`` are the exact values (constants of the file).
    exact: bool = False

    @staticmethod
    def of(dims: Dims) -> Tensor:
        known = [d for d in dims if d is not None]
        if len(known) != len(dims):
            raise _Unbounded("a dimension is not known")
        return Tensor(list(dims), _product(known))


class _Unbounded(Exception):
    """The size of a node's output cannot be bounded from the file."""
