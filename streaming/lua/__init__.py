"""The Redis scripts of Redis mode, one Lua file each, read with `importlib.resources`."""

from __future__ import annotations

from importlib.resources import files
from string import Template
from typing import Any


def script(name: str, *, helpers: bool = False, folder: Any = None, **values: int) -> str:
    """The text of `name.lua`, after helpers.lua when asked, its `$names` filled in from `values`.

    `folder` (a `Traversable`): another folder of scripts than this one, helpers.lua included.
    """
    folder = files(__package__) if folder is None else folder
    text = (folder / f"{name}.lua").read_text(encoding="utf-8")
    if helpers:
        text = script("helpers", folder=folder) + "\n" + text
    return Template(text).substitute(values) if values else text
