"""The one way the browser tests start Debian's chromium (Playwright with `executable_path`; its own browser
download never works here): the binary, and flags that keep it headless and off the network."""

from __future__ import annotations

CHROMIUM = "/usr/bin/chromium"  # Debian's package; .ci/ensure-chromium (make setup) installs it where missing
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",  # no connections of its own: this machine has no network
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
