"""report.html in a real browser (headless Chromium, Debian's `chromium` package; .ci/run installs it):
the tables and inlined images are in the rendered DOM, and screenshots at phone and desktop widths are
written (to $SPARRING_SCREENSHOTS when set, to look at them) and are not blank."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from sparring.cli import main

BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no headless Chromium (Debian: apt-get install chromium)")


def _chromium(*args: str) -> subprocess.CompletedProcess:
    cmd = [BROWSER, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
           "--disable-dev-shm-usage", *args]
    return subprocess.run(cmd, capture_output=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    config = root / "b.toml"
    config.write_text('name = "browser <check>"\n[data]\nn = 40\n[train]\nepochs = 2\n[evaluate]\neps = ["0.05", "0.1"]\n'
                      'gallery = 4\n[[attacks]]\nname = "fgsm"\n[[attacks]]\nname = "pgd"\nsteps = 5\n'
                      '[audit]\nn = 20\nsteps = 5\nsquare_queries = 20\n')
    assert main(["run", str(config), "--out", str(root / "run")]) == 0
    return root / "run" / "report.html"


def test_rendered_dom_has_the_tables_and_images(report):
    done = _chromium("--dump-dom", report.as_uri())
    assert done.returncode == 0, done.stderr.decode()[-500:]
    dom = done.stdout.decode()
    assert "browser &lt;check&gt;" in dom and "<check>" not in dom  # the config name is escaped
    tables = re.findall(r"<table", dom)
    assert len(tables) >= 5  # clean, robust accuracy, details, audit checks, audit numbers
    for heading in ("Clean accuracy", "Robust accuracy", "Audit", "Galleries"):
        assert heading in dom
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', dom)
    assert len(images) >= 2  # the accuracy curve and a gallery
    for data in images:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name,size", [("phone", "390,844"), ("desktop", "1280,900")])
def test_screenshots_at_phone_and_desktop_widths(report, tmp_path, name, size):
    folder = Path(os.environ.get("SPARRING_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    shot = folder / f"report-{name}.png"
    done = _chromium(f"--window-size={size}", f"--screenshot={shot}", report.as_uri())
    assert done.returncode == 0 and shot.is_file(), done.stderr.decode()[-500:]
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == tuple(int(v) for v in size.split(","))
        colours = image.convert("L").getextrema()
        assert colours[1] - colours[0] > 100  # text on a background, not a blank page
