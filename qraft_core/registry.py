"""One registry type for every kind of plugin (adapters, parsers, operators, detectors, ...).

A registry is a mapping of names to objects, in registration order. A name is taken once:
registering another object under it is refused with the holder named (the
same object again is fine: a module imported twice registers twice). A lookup
loads the plugins first, so a plugin is never missing because nothing happened
to import it, and an unknown name lists the known ones.

>>> colours = Registry[str]("colour", load=lambda: None)
>>> colours.add("red", "#f00")
'#f00'
>>> @colours.register("green")
... def _green() -> str: ...
>>> colours.names()
['green', 'red']
>>> colours["blue"]
Traceback (most recent call last):
...
qraft_core.registry.UnknownName: unknown colour 'blue' (known: green, red)
>>> colours.add("red", "#e00")
Traceback (most recent call last):
...
qraft_core.registry.DuplicateName: colour 'red' is taken by '#f00'

Names, and texts registered (display names), are shown on terminals and in cards' Markdown, so
control characters (a newline, NUL, a right-to-left override) are refused in them:

>>> colours.add("pink", "#fcc\\n# heading")
Traceback (most recent call last):
...
qraft_core.registry.UnsafeText: colour 'pink': its text holds control character U+000A
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterator, Mapping
from typing import TypeVar

from qraft_core.plugins import load_plugins

T = TypeVar("T")
D = TypeVar("D")


class UnknownName(KeyError):
    """A lookup of a name nothing registered; the message lists the known names."""

    def __str__(self) -> str:  # KeyError would quote the message like a key
        return str(self.args[0])


class DuplicateName(ValueError):
    """A second object registered under a taken name."""


class UnsafeText(ValueError):
    """A name or registered text holding a control character."""


# Besides the Cc control characters: the bidirectional overrides and isolates, which reorder what
# a terminal or a rendered card shows.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def control_character(text: str) -> str | None:
    """The first control character of `text` as U+XXXX, or None.

    >>> control_character("load (%)"), control_character("a\\u202eb")
    (None, 'U+202E')
    """
    for char in text:
        if unicodedata.category(char) == "Cc" or char in _BIDI_CONTROLS:
            return f"U+{ord(char):04X}"
    return None


def _holder(item: object) -> str:
    return getattr(item, "__qualname__", None) or repr(item)


class Registry(Mapping[str, T]):
    """Named objects of one kind, a read-only mapping that loads the plugins before it is read.

    `kind` words the errors ("unknown operator 'x' (known: …)").
    """

    def __init__(self, kind: str, load: Callable[[], object] = load_plugins) -> None:
        self.kind = kind
        self._load = load
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        for what, text in (("its name", name), ("its text", item)):
            found = control_character(text) if isinstance(text, str) else None
            if found is not None:
                raise UnsafeText(f"{self.kind} {name!r}: {what} holds control character {found}")
        known = self._items.get(name)
        if known is not None and known is not item and known != item:
            raise DuplicateName(f"{self.kind} {name!r} is taken by {_holder(known)}")
        self._items[name] = item
        return item

    def register(self, name: str) -> Callable[[D], D]:
        """Decorator: register the decorated object (a class or function) under `name`."""

        def decorate(item: D) -> D:
            self.add(name, item)  # type: ignore[arg-type]
            return item

        return decorate

    def __getitem__(self, name: str) -> T:
        self._load()
        try:
            return self._items[name]
        except KeyError:
            raise UnknownName(f"unknown {self.kind} {name!r} (known: {', '.join(self.names())})") from None

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        """The names in registration order."""
        self._load()
        return iter(list(self._items))

    def __len__(self) -> int:
        self._load()
        return len(self._items)
