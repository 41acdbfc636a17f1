"""The one metric registry: every number in the project's tables is looked up here by name.

A metric is a plain function registered with a decorator::

    @register_metric("ssim", kind="pairwise", higher_is_better=True)
    def ssim(a, b): ...

and later found with ``get_metric("ssim")(a, b)`` or listed with ``list_metrics()``.
The decorator returns the function unchanged, so ``from jaxdeid.metrics import ssim``
gives the bare function too.

Calling convention, fixed by ``kind`` (what a caller may rely on):

``pairwise``
    ``fn(a, b) -> jnp.ndarray [B]``: one value per example for two batches of equal
    shape (images NHWC in [0, 1], or embeddings [B, D]). Pure jnp and jit-able.
``verification``
    ``fn(similarities, is_genuine, ...) -> dict`` over 1:1 pairs (numpy, host side).
``identification``
    ``fn(probe_embeddings, probe_labels, gallery, gallery_labels, ...) -> dict`` (1:N).
``success``
    ``fn(...) -> dict`` with a ``rate`` and one rate per part of docs/method.md §4.4.
``geometry``
    ``fn(box_a, box_b) -> jnp.ndarray`` on (y0, x0, y1, x1) boxes.
``distribution``
    ``fn(features_a [N, D], features_b [M, D]) -> float`` between two sets of samples (numpy, host side).

Dict-valued metrics return plain Python floats / ints (and numpy arrays for per-example
flags or curves) so the results writer can serialise them unchanged.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Literal, TypeVar

MetricKind = Literal["pairwise", "verification", "identification", "success", "geometry", "distribution"]
_KINDS: tuple[str, ...] = ("pairwise", "verification", "identification", "success", "geometry", "distribution")

F = TypeVar("F", bound=Callable[..., Any])


@dataclasses.dataclass(frozen=True)
class Metric:
    """One registered metric; calling it calls ``fn``."""

    name: str                       # registry key, e.g. "ssim"
    fn: Callable[..., Any]          # the function itself
    kind: str                       # calling convention, see the module docstring
    higher_is_better: bool | None   # direction for tables; None when not a score (e.g. a curve)

    @property
    def description(self) -> str:
        """First line of the function's docstring."""
        doc = (self.fn.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)


_REGISTRY: dict[str, Metric] = {}


def register_metric(name: str, *, kind: MetricKind, higher_is_better: bool | None = None) -> Callable[[F], F]:
    """Decorator: register ``fn`` under ``name``. Names are unique: a second function under a taken name is an error."""
    if kind not in _KINDS:
        raise ValueError(f"unknown metric kind {kind!r}; expected one of {_KINDS}")

    def decorator(fn: F) -> F:
        previous = _REGISTRY.get(name)
        # The same function defined again (a module reload) may replace itself; anything else is a clash.
        if previous is not None and _qualified_name(previous.fn) != _qualified_name(fn):
            raise ValueError(f"metric {name!r} is already registered by {_qualified_name(previous.fn)}")
        _REGISTRY[name] = Metric(name=name, fn=fn, kind=kind, higher_is_better=higher_is_better)
        return fn

    return decorator


def _qualified_name(fn: Callable[..., Any]) -> str:
    fn = getattr(fn, "__wrapped__", fn)  # look through jax.jit
    return f"{fn.__module__}.{fn.__qualname__}"


def get_metric(name: str) -> Metric:
    """The metric registered as ``name``; a KeyError lists the known names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; registered metrics: {', '.join(sorted(_REGISTRY))}") from None


def list_metrics(kind: MetricKind | None = None) -> list[str]:
    """Registered metric names, sorted; only those of ``kind`` when given."""
    return sorted(n for n, m in _REGISTRY.items() if kind is None or m.kind == kind)
