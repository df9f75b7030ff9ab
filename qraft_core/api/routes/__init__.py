"""One router per resource; each is made for an `ApiContext`.

These modules keep their annotations evaluated (no `from __future__ import
annotations`): FastAPI reads them at run time, and the key dependencies are
local to each router factory.
"""
