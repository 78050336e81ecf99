"""The Post API pages' samples as the tests read them: where the bridge is stricter than the pages on purpose
(README, "Where the docs disagree"), with the parameter its rule names."""

from __future__ import annotations

BRIDGE_STRICTER = {
    ("revenue", "account_id"): "undocumented: an unknown parameter could make the API refuse a whole batch",
    ("revenue", "transaction_id"): "typed <int>: the contract follows the type, so a text id fails at the producer",
    **{
        ("ecommerce", f"{price}_internal_{part}"): "an <array>: the bridge always writes [a,b], never a bare value"
        for price in ("cart_item_price", "actual_price", "original_price")
        for part in ("currency", "value")
    },
}
