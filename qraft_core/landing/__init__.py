"""Parts of the lander (`qraft_core.lander`) split out of it: the compiled decoding of whole messages."""
