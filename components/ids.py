"""Every element id of the dashboard, as constants: a renamed id breaks at import, not at run time.

Panel ids are the stable ones named in the issues (tests and users' scripts find them).
"""

# Panels (seed 000, Fig. 1)
CONTROL_PANEL = "control-panel"  # A
ATTRIBUTE_FILTERS = "attribute-filters"  # B
VIEW_ACT, VIEW_FEA, VIEW_PRD = "view-act", "view-fea", "view-prd"  # C, D, E
VIEWS = {"act": VIEW_ACT, "fea": VIEW_FEA, "prd": VIEW_PRD}
SELECTION_MANAGER = "selection-manager"  # F
DETAIL_VIEW = "detail-view"  # G

# Controls and state shared between panels
RUN_PICKER = "run-picker"  # value: run id
THRESHOLD = "slider-threshold"  # value: decision threshold in [0, 1]
STORE_SELECTION = "store-selection"  # data: list of run row indices currently selected
STORE_DETAIL_INDEX = "store-detail-index"  # data: run row index of the image shown large

# Slots that other panels' modules fill with callbacks of their own
DETAIL_SCIENCE = "detail-science"  # beam centre, I(q), polar view of the large image
AUDIT_PANEL = "audit-panel"  # label audit, corrections, retraining
