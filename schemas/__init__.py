"""Data contracts (JSON) shipped with skybatch; see skybatch.store.schema."""
