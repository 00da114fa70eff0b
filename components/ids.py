"""Every element id of the dashboard, as constants: a renamed id breaks at import, not at run time.

Panel ids are the stable ones named in the issues (tests and users' scripts find them).
"""

# Panels (Huang et al., IEEE VIS 2020, Fig. 1)
CONTROL_PANEL = "control-panel"  # A
ATTRIBUTE_FILTERS = "attribute-filters"  # B
VIEW_ACT, VIEW_FEA, VIEW_PRD = "view-act", "view-fea", "view-prd"  # C, D, E
VIEWS = {"act": VIEW_ACT, "fea": VIEW_FEA, "prd": VIEW_PRD}
SELECTION_MANAGER = "selection-manager"  # F
DETAIL_VIEW = "detail-view"  # G

# Controls and state shared between panels
RUN_PICKER = "run-picker"  # value: run id
THRESHOLD = "slider-threshold"  # value: decision threshold in [0, 1]
THRESHOLD_MODE = "radio-threshold-mode"  # per (the run's own, per attribute) | one (the slider)
LABELS_USED = "radio-labels-used"  # with (corrections applied) | annotated
STORE_SELECTION = "store-selection"  # data: list of run row indices currently selected
STORE_DETAIL_INDEX = "store-detail-index"  # data: run row index of the image shown large
# data: the selection once its summary is on screen, which the detail view then follows
STORE_SUMMARISED = "store-selection-summarised"

# Slots that other panels' modules fill with callbacks of their own
DETAIL_SCIENCE = "detail-science"  # beam centre, I(q), polar view of the large image
AUDIT_PANEL = "audit-panel"  # label audit, corrections, retraining

# ---- the rest of the dashboard's ids
EMPTY_STATE = "alert-empty-state"  # shown when the data directory holds no run
URL = "url"  # fires once per page load so the run list is read fresh

# A Control panel
POINT_MODE = "radio-point-mode"  # dots | act | prd | joint
FLOWER_ATTRIBUTES = "checklist-flower-attributes"  # indices of the attributes petals show
DISTANCE = "radio-error-distance"  # cosine | euclidean
COLOUR_BY = "radio-colour-by"  # label | probability | outcome | error
COLOUR_ATTRIBUTE = "dropdown-colour-attribute"  # attribute index used by colour-by
RUN_SUMMARY = "text-run-summary"
THRESHOLD_CHOICE = "threshold-choice"  # holds THRESHOLD_MODE; hidden for a run without thresholds
THRESHOLD_SLIDER_BOX = "threshold-slider-box"  # greyed while the per-attribute ones are in force
THRESHOLD_NOTE = "text-threshold-note"  # what is in force, or why there is only the slider
THRESHOLD_LIST = "threshold-list"  # each attribute's own threshold: swatch, name, value

# B Attribute filters
FILTER_ATTRIBUTES = "dropdown-filter-attributes"
FILTER_MATCH = "radio-filter-match"  # any | all
FILTER_ON = "radio-filter-on"  # act | prd | TP | FP | FN | TN
FILTER_COUNT = "text-filter-count"

# C, D, E Embedded views
VIEW_TOOLTIPS = {s: f"tooltip-{s}" for s in VIEWS}
VIEW_HEADERS = {s: f"header-{s}" for s in VIEWS}
# A large run's first pictures, sent with the page and shown until plotly.js has drawn the view.
VIEW_PREVIEWS = {s: f"preview-{s}" for s in VIEWS}
COLOUR_LEGEND = "colour-legend"
FLOWER_LEGEND = "graph-flower-legend"
FLOWER_CAP = "input-flower-cap"
STORE_VIEWPORTS = {s: f"store-viewport-{s}" for s in VIEWS}  # data: [x0, x1, y0, y1] or None
# data: [width, height] of the view's plot area in pixels (large runs are drawn at that size)
STORE_VIEW_SIZES = {s: f"store-view-size-{s}" for s in VIEWS}
STORE_VIEWS_DRAWN = "store-views-drawn"  # data: True once the views' first draw has come
# data: the key of the picture a large run's view shows (its figure's layout.meta.picture)
STORE_SHOWN_PICTURES = {s: f"store-shown-picture-{s}" for s in VIEWS}
STORE_SELECTION_SOURCE = "store-selection-source"  # data: space the selection was drawn in
STORE_GROUPS = "store-groups"  # data: [{name, colour, indices}]

# F Selection manager
SELECTION_TITLE = "text-selection-title"
SELECTION_TABS = "tabs-selection"
SELECTION_SUMMARY = "selection-summary"
GROUP_NAME = "input-group-name"
SAVE_GROUP = "button-save-group"
CLEAR_SELECTION = "button-clear-selection"
EXPORT_SELECTION = "button-export-selection"
GROUP_LIST = "group-list"
COMPARE_A, COMPARE_B = "dropdown-compare-a", "dropdown-compare-b"
COMPARE_TABLE = "compare-table"
DOWNLOAD = "download-group-csv"
GROUP_SELECT, GROUP_EXPORT, GROUP_DELETE = "group-select", "group-export", "group-delete"  # types

# G Detail image view
THUMB, NEIGHBOUR = "thumb", "neighbour"  # pattern-matching types: {"type": THUMB, "index": row}
THUMBNAILS = "detail-thumbnails"
DETAIL_TITLE = "text-detail-title"
DETAIL_IMAGE = "graph-detail-image"
COLOUR_MAP = "dropdown-colour-map"
DETAIL_IMAGE_TOOLS = "detail-image-tools"  # colour map and saliency, shown with an image open
DETAIL_TABLE = "detail-act-prd-table"
NEIGHBOURS = "detail-neighbours"
SALIENCY_ATTRIBUTE = "dropdown-saliency-attribute"  # panel G: the attribute whose saliency shows
SALIENCY_OPACITY = "slider-saliency-opacity"
SALIENCY_NOTE = "text-saliency-note"  # why no saliency shows (no model, a refused value)

# ---- label audit, corrections, retraining: callbacks/audit.py & co.
AUDIT_SUMMARY = "text-audit-summary"  # corrections count of the run's dataset
AUDIT_TABLE = "audit-table"
AUDIT_PREDICTIONS = "text-audit-predictions"  # which predictions the audit ranks on
AUDIT_ROW = "audit-row"  # pattern-matching type: {"type": AUDIT_ROW, "index": "row/column"}
EXPORT_CORRECTIONS = "button-export-corrections"
DOWNLOAD_CORRECTIONS = "download-corrections-csv"
DETAIL_CORRECTIONS = "detail-corrections"  # slot in panel G: the label-correction form
CORRECTION_ATTRIBUTE = "dropdown-correction-attribute"
CORRECTION_NOTE = "input-correction-note"
CORRECTION_AUTHOR = "input-correction-author"
FLIP_LABEL = "button-flip-label"
UNDO_CORRECTION = "button-undo-correction"
CORRECTION_STATUS = "text-correction-status"
CORRECTION_LIST = "correction-list"  # the open image's corrections in force
STORE_AUTHOR = "store-author"  # data: analyst name, kept in the browser (storage_type="local")
STORE_CORRECTIONS = "store-corrections-version"  # data: latest correction event id seen
CORRECTIONS_POLL = "interval-corrections-poll"  # asks for other analysts' corrections
CORRECTION_KEY = "text-correction-key"  # above the views: what the diamond marks, how many
RETRAIN = "button-retrain"
RETRAIN_EPOCHS = "input-retrain-epochs"
CANCEL_RETRAIN = "button-cancel-retrain"
RETRAIN_PROGRESS = "progress-retrain"
RETRAIN_PROGRESS_BOX = "retrain-progress-box"
RETRAIN_STATUS = "text-retrain-status"
RETRAIN_COMPARE = "retrain-compare-table"
SHOW_NEW_RUN = "button-show-new-run"
STORE_RETRAIN = "store-retrain-result"  # data: {"before": run id, "after": run id}
STORE_RETRAIN_REQUEST = "store-retrain-request"  # data: {run, epochs, corrections snapshot}
CORRECTIONS_ALERT = "alert-corrections-unavailable"  # names an unreadable corrections database
CORRECTION_WHY = "correction-buttons"  # its title says why flip/undo are off (read-only, viewer)
RETRAIN_WHY = "retrain-button"  # its title says why retraining is off

# ---- analyses in panel F and the views: callbacks/analyses.py
COOCCURRENCE = "cooccurrence-matrix"  # A × A heatmap: change of j's error rate when i is present
COOCCURRENCE_KIND = "radio-cooccurrence-kind"  # fn | fp
COOCCURRENCE_GROUP = "dropdown-cooccurrence-group"  # all | selection | saved group number
COOCCURRENCE_NOTE = "text-cooccurrence-note"  # how many images the table counts
DISAGREEMENT_STATUS = "text-disagreement-status"  # panel A: says while the score is computed
MOVED_STATUS = "text-moved-status"  # panel A: the parent a run's images moved from, or that none
DISAGREEMENT_LIST = "disagreement-list"  # panel F tab: the most disagreeing images
DISAGREEMENT_TAB_STATUS = "text-disagreement-tab-status"
DISAGREEING = "disagreeing"  # pattern-matching type of the list's thumbnails: {"index": row}
FILTER_DISAGREEING = "checklist-filter-disagreeing"  # panel B: ["top"] keeps the top 5 %

# ---- robustness probe in panel F: callbacks/robustness.py
ROBUSTNESS_PANEL = "robustness-panel"  # the tab's content
ROBUSTNESS_SCOPE = "dropdown-robustness-scope"  # sample | selection | saved group number
ROBUSTNESS_SIZE = "input-robustness-size"  # the most images one probe re-infers
ROBUSTNESS_METRIC = "radio-robustness-metric"  # AP | agreement
ROBUSTNESS_START = "button-robustness-start"
ROBUSTNESS_CANCEL = "button-robustness-cancel"
ROBUSTNESS_PROGRESS = "progress-robustness"
ROBUSTNESS_PROGRESS_BOX = "robustness-progress-box"
ROBUSTNESS_STATUS = "text-robustness-status"
ROBUSTNESS_GRAPH = "graph-robustness"  # small multiples: score against level
ROBUSTNESS_NOTE = "text-robustness-note"  # what each level of each perturbation means
STORE_ROBUSTNESS_REQUEST = "store-robustness-request"  # data: {"ticket": …}
STORE_ROBUSTNESS = "store-robustness-result"  # data: {run, n, scope, table records}
