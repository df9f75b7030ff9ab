"""Names from the data (streams, fields, category values) made safe to show.

A name is whatever the data said: it may hold line breaks, terminal escape sequences,
bidi overrides that reverse the text around it, or Markdown and HTML. Shown to a person
it must stay one visible piece of text that cannot change what surrounds it.
"""

from __future__ import annotations

import re

# Control characters (C0, DEL, C1), line and paragraph separators, and the bidi embeddings,
# overrides and isolates (U+202A-202E, U+2066-2069) that would reorder the text next to a name.
_INVISIBLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# What Markdown or HTML would read as markup inside a line (a line break cannot occur, see above).
# `_` is left alone: inside a word (value_max) Markdown does not read it, and field names are full of it.
_MARKUP = re.compile(r"([\\`*\[\]<>|])")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _SHORT_ESCAPES.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def printable(text: str) -> str:
    """`text` on one line, with every control and bidi character shown as its escape.

    >>> printable("web\\x1b]0;pwned\\x07\\nx")
    'web\\\\x1b]0;pwned\\\\x07\\\\nx'
    >>> printable("cpu\\u202e 12")
    'cpu\\\\u202e 12'
    """
    return _INVISIBLE.sub(_escape, text)


def printable_lines(text: str) -> str:
    """`text` with its own line breaks kept and every other control or bidi character escaped."""
    return "\n".join(printable(line) for line in text.split("\n"))


def markdown_inline(text: str) -> str:
    """`text` as literal inline Markdown: markup characters backslash-escaped, then made printable.

    >>> markdown_inline("x\\n- **Forged:** [c](javascript:alert(2)) <img>")
    'x\\\\n- \\\\*\\\\*Forged:\\\\*\\\\* \\\\[c\\\\](javascript:alert(2)) \\\\<img\\\\>'
    """
    return printable(_MARKUP.sub(r"\\\1", text))
