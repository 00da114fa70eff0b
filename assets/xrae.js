// A large run's views are pictures drawn on the server at each view's pixel size
// (callbacks/raster.py). The page measures a view as it starts and after each relayout
// (window.xrae.measure, called by a clientside callback); a window resize is caught here, since
// Dash passes on a graph's relayoutData only when it differs from the last one, and every
// plain resize reports the same {autosize: true}: without this, pictures stayed stretched.
window.xrae = (function () {
    const watched = {};  // graph id: {store, margin, last}
    const RESIZE_SETTLE_MS = 250;  // one redraw when the user stops dragging the window edge
    let timer = null;

    function size(graphId, margin) {
        // The plot area in CSS pixels (dcc.Graph's box, sized by the page's CSS before plotly
        // draws into it, less the figure's margins) and the screen's device pixels per CSS
        // pixel, so a HiDPI screen gets a picture as sharp as it is; null while not laid out.
        const graph = document.getElementById(graphId);
        const box = graph && graph.getBoundingClientRect();
        if (!box || box.width <= 2 * margin || box.height <= 2 * margin) return null;
        const ratio = Math.round(100 * (window.devicePixelRatio || 1)) / 100;
        return [Math.round(box.width) - 2 * margin, Math.round(box.height) - 2 * margin, ratio];
    }

    function same(a, b) {
        return Boolean(a && b) && a.every((v, i) => b[i] === v);
    }

    function measure(graphId, storeId, margin, previous) {
        // The view's size when it differs from `previous` (the store's value), else null.
        watched[graphId] = {store: storeId, margin: margin, last: previous};
        const now = size(graphId, margin);
        if (!now || same(now, previous)) return null;
        watched[graphId].last = now;
        return now;
    }

    window.addEventListener('resize', () => {
        clearTimeout(timer);
        timer = setTimeout(() => {
            for (const [graphId, w] of Object.entries(watched)) {
                const now = size(graphId, w.margin);
                if (now && !same(now, w.last)) {
                    w.last = now;
                    window.dash_clientside.set_props(w.store, {data: now});
                }
            }
        }, RESIZE_SETTLE_MS);
    });

    return {measure: measure};
})();
