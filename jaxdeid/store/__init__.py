"""Shipped trained weights: safetensors files per network and preset, and the one rule
that decides which weights a command uses (`resolve`). See `core` for the layout and
`jaxdeid.commands.weights` for ``jaxdeid weights list|export|verify``."""

from .core import (MANIFEST, PRESET_BUDGET_BYTES, SHIPPED_ROOT, abstract_inference, export, fingerprint,
                   load_shipped, loaded_from_store, read_manifest, resolve, round_trip, shapes_of, shipped, storage_error, store_bytes,
                   store_dir, store_name, trained_steps)
from .fileformat import StoreError

__all__ = ["MANIFEST", "PRESET_BUDGET_BYTES", "SHIPPED_ROOT", "StoreError", "abstract_inference", "export",
           "fingerprint", "load_shipped", "loaded_from_store", "read_manifest", "resolve", "round_trip", "shapes_of",
           "shipped", "storage_error", "store_bytes", "store_dir", "store_name", "trained_steps"]
