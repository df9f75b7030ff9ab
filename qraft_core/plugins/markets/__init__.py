"""The markets plugin: everything that knows trades and headlines.

It registers, through the same registries a user's plugin uses: the `ohlcv`
aggregate method, the cleaning rule for trade prices and quantities, the
market metric set of pattern events (volatility, volume, trade size, buy
ratio, price, headlines), the trade and headline context summaries of cards,
and the card vocabulary for those names in English and Chinese.
"""

from qraft_core.plugins.markets import cards, ohlcv, rules

# Imported for their registration side effect.
_REGISTERED = (cards, ohlcv, rules)
