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
                      '[audit]\nn = 20\nsteps = 5\nsquare_queries = 20\n'
                      '[[variants]]\nname = "plain"\n[[variants]]\nname = "contrastive"\n'
                      'defenses = [{name = "contrastive"}]\n')
    assert main(["run", str(config), "--out", str(root / "run")]) == 0
    return root / "run" / "report.html"


def test_rendered_dom_has_the_tables_and_images(report):
    done = _chromium("--dump-dom", report.as_uri())
    assert done.returncode == 0, done.stderr.decode()[-500:]
    dom = done.stdout.decode()
    assert "browser &lt;check&gt;" in dom and "<check>" not in dom  # the config name is escaped
    tables = re.findall(r"<table", dom)
    # clean, attack x defense, and per variant: robust accuracy, details, per class, audit checks and numbers
    assert len(tables) >= 12
    for heading in ("Clean accuracy", "Attack x defense", "Robust accuracy", "Perturbation norms",
                    "Per-class confusion shift", "Latent space", "Audit", "Galleries"):
        assert heading in dom
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', dom)
    assert len(images) >= 8  # per variant: curve, norms, confusion; the latent plot; galleries
    for data in images:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"


def _page_height(report: Path, width: int, tmp: Path) -> int:
    """The rendered page's full height at `width`: a copy of the report (without its script-blocking CSP)
    writes document height into its title, read back from the dumped DOM."""
    html = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", report.read_text(encoding="utf-8"))
    probe = tmp / "probe.html"
    probe.write_text(html.replace("</body>", "<script>document.title = 'H' + "
                                  "document.documentElement.scrollHeight;</script></body>"), encoding="utf-8")
    done = _chromium(f"--window-size={width},800", "--dump-dom", probe.as_uri())
    found = re.search(r"<title>H(\d+)</title>", done.stdout.decode())
    assert found, done.stderr.decode()[-500:]
    return int(found.group(1))


@pytest.mark.parametrize("name,width", [("phone", 390), ("desktop", 1280)])
def test_full_page_screenshots_at_phone_and_desktop_widths(report, tmp_path, name, width):
    folder = Path(os.environ.get("SPARRING_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    height = min(_page_height(report, width, tmp_path), 16000)
    assert height > 2000  # the whole report, not one screen
    shot = folder / f"report-{name}.png"
    done = _chromium(f"--window-size={width},{height}", f"--screenshot={shot}", report.as_uri())
    assert done.returncode == 0 and shot.is_file(), done.stderr.decode()[-500:]
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (width, height)
        grey = image.convert("L")
        colours = grey.getextrema()
        assert colours[1] - colours[0] > 100  # text on a background, not a blank page
        bottom = grey.crop((0, height - min(height, 1500), width, height)).getextrema()
        assert bottom[1] - bottom[0] > 100  # the end of the page is drawn too
