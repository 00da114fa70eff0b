"""Dashboard layout: one module per panel, pure functions returning components; no callbacks."""
