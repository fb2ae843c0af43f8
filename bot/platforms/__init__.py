"""Chat platform adapters: one module per platform, each implementing `base.Platform`."""
