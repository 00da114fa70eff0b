"""Every dcc.Store of the dashboard in one place: the per-user state lives in the browser.

A selection or saved group of more than a thousand rows is held there as a token for rows the
server keeps in the data directory's disk cache (callbacks.rowsets), which every gunicorn worker
reads: any worker can still answer any request.
"""

from dash import dcc

from components import ids

CORRECTIONS_POLL_MS = 5000  # how soon another analyst's correction shows on this page


def stores() -> list:
    """The stores, the page-location trigger, the corrections poll and the CSV download target.

    A store that starts empty has no `data` at all, not None: dcc.Store tells apart None
    and no value when it mounts, and sets a None store to no value, which fires every callback
    listening to it as the page starts (a redraw of the views, background jobs, for nothing).
    Callbacks get None for it either way."""
    return [
        dcc.Location(id=ids.URL),
        # the rows selected: a list, or a token for many rows kept on the server (rowsets)
        dcc.Store(id=ids.STORE_SELECTION, data=[]),
        dcc.Store(id=ids.STORE_DETAIL_INDEX),  # run row index shown large
        dcc.Store(id=ids.STORE_SUMMARISED, data=[]),  # the selection as the detail follows it
        # saved groups: {run, name, colour, indices}, indices as the selection holds them
        dcc.Store(id=ids.STORE_GROUPS, data=[]),
        dcc.Store(id=ids.STORE_SELECTION_SOURCE),  # view the selection came from
        # One viewport store per view, so a zoom redraws the flowers of that view only.
        *[dcc.Store(id=store) for store in ids.STORE_VIEWPORTS.values()],
        *[dcc.Store(id=store) for store in ids.STORE_VIEW_SIZES.values()],
        *[dcc.Store(id=store) for store in ids.STORE_SHOWN_PICTURES.values()],
        dcc.Store(id=ids.STORE_VIEWS_DRAWN),
        dcc.Store(id=ids.STORE_CORRECTIONS, data=0),  # newest correction event seen
        dcc.Interval(id=ids.CORRECTIONS_POLL, interval=CORRECTIONS_POLL_MS),
        dcc.Download(id=ids.DOWNLOAD),
    ]
