"""Progress bars for long work (tqdm), quiet when not attached to a terminal unless asked."""

from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm


def progress(iterable=None, *, total=None, desc: str = "", disable: bool | None = None, **kwargs):
    """A tqdm bar; JAXDEID_PROGRESS=0 silences it, =1 forces it (e.g. in CI logs)."""
    if disable is None:
        flag = os.environ.get("JAXDEID_PROGRESS")
        disable = (flag == "0") if flag is not None else not sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, disable=disable, dynamic_ncols=True, **kwargs)
