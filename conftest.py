"""pytest configuration shared by every test: keep the real browser off the network."""


def pytest_setup_options():
    """dash.testing hook: Chromium options for the headless browser tests."""
    from selenium.webdriver.chrome.options import Options

    options = Options()
    for flag in (
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1600,1000",
        # Scrolls happen at once: a test clicks where the element is, not where it glides to.
        "--disable-smooth-scrolling",
    ):
        options.add_argument(flag)
    return options
