"""The Redis scripts of Redis mode, one Lua file each, read with `importlib.resources`."""

from __future__ import annotations

from importlib.resources import files
from string import Template


def script(name: str, *, helpers: bool = False, **values: int) -> str:
    """The text of `name.lua`, after helpers.lua when asked, its `$names` filled in from `values`."""
    text = (files(__package__) / f"{name}.lua").read_text(encoding="utf-8")
    if helpers:
        text = script("helpers") + "\n" + text
    return Template(text).substitute(values) if values else text
