"""Screenshots of the review pack's main pages for docs/board.md, taken in Debian's headless Chromium.

python docs/review_screenshots.py out/review docs/images
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
SHOTS = [  # (file name, page, element to frame or None for the top of the page)
    ("review-guideline.png", "guideline.html", None),
    (
        "review-rule-card.png",
        "rules.html#rule-cancer-urgent_whole_spine_mri",
        "article#rule-cancer-urgent_whole_spine_mri",
    ),
    ("review-section.png", "section-red_flags.html", "figure.diagram"),
    ("review-algorithm.png", "algorithm.html#urgency", "#urgency figure.diagram"),
    ("review-overview.png", "index.html", None),
    ("review-decision-table.png", "section-imaging.html", "table.dmn"),
]


def main(pack: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            profile,
            executable_path=shutil.which("chromium") or "/usr/bin/chromium",
            args=ARGS,
            viewport={"width": 1280, "height": 860},
        )
        page = browser.new_page()
        for name, target, element in SHOTS:
            page.goto(
                (pack / target.split("#")[0]).resolve().as_uri() + ("#" + target.split("#")[1] if "#" in target else "")
            )
            if element is None:
                page.screenshot(path=str(out / name))
            else:
                page.locator(element).first.screenshot(path=str(out / name))
            print(out / name)
        browser.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
