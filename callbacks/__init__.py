"""Dashboard behaviour: one module per panel, each registering its callbacks with @dash.callback."""
