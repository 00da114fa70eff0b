"""Dashboard behaviour: one module per panel. Each registers its callbacks with Dash's
`hooks.callback`, which every app made in this process receives: importing this package is all
the wiring an app needs (tests build several apps; no module imports the app)."""

from callbacks import (  # noqa: F401  (imported for their callbacks)
    analyses,
    audit,
    control,
    corrections,
    detail,
    legends,
    retrain,
    robustness,
    science,
    selection,
    views,
)
