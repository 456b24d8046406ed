"""report.html: the team's name, every problem, links to the logs, plain numbers, and a layout that
reads at 1,400 px (rendered in headless Chromium where it is installed)."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from evaluation import pages, report_page, run
from evaluation.synthetic import main as synthetic

COPY = 'for f in {inputs}/*_0000.nii.gz; do n=$(basename "$f" _0000.nii.gz); cp %s/$n.nii.gz {outputs}/; done'
WIDTH = 1400
PROBE = """<script>window.addEventListener('load', () => {
  const right = [...document.querySelectorAll('table')].map(t => Math.ceil(t.getBoundingClientRect().right));
  document.body.setAttribute('data-layout', [document.documentElement.scrollWidth,
    document.documentElement.clientWidth, Math.max(...right)].join(' '));
});</script>"""


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """A FLARE22 run (13 organs: the widest tables) of a team that crashes on one case of three."""
    root = tmp_path_factory.mktemp("report")
    synthetic(["-o", str(root / "data"), "--cases", "3", "--max-side", "32"])
    gt = root / "data" / "gt"
    shutil.copy(gt / "synthetic_000.nii.gz", gt / "no input #1.nii.gz")  # no image: never runs, writes no log
    command = 'case "$(ls {inputs})" in synthetic_001*) exit 3;; esac; ' + COPY % (root / "data" / "pred")
    assert run.main(["--inputs", str(root / "data" / "images"), "--gt", str(root / "data" / "gt"),
                     "--out", str(root / "out"), "--name", "Team Aurora", "--rules", "flare22", "--command", command,
                     "--baseline", "0", "--interval", "0.02", "--failures", "penalised"]) == 1
    return root / "out" / "report.html"


def test_the_report_names_the_team_lists_every_problem_and_links_the_logs(report):
    text = report.read_text()
    assert re.search(r"<title>Team Aurora: FLARE evaluation \(flare22\)</title>", text)
    assert "<h1>Team Aurora: FLARE evaluation (flare22)</h1>" in text
    problems = text.split("<h2>Problems</h2>")[1].split("<h2>")[0]
    assert "synthetic_001.nii.gz: crashed: exit code 3" in problems
    assert "synthetic_001.nii.gz: prediction missing: scored as empty" in problems
    links = re.findall(r'href="(efficiency/logs/[^"]+)"', text)
    assert "efficiency/logs/synthetic_001.log" in links and len(set(links)) == 3
    assert all((report.parent / link).is_file() for link in links)
    assert "no input #1.nii.gz: no-input" in problems
    assert "29,491,200" in text  # FLARE22's stuck GPU area for the crashed case, as a plain number
    assert not re.search(r"\d\.\d+e[+-]\d", text)  # no exponent anywhere


def test_log_links_are_percent_encoded_and_only_to_logs_there_are():
    assert report_page.log_href("case 1#a.nii.gz", {"case 1#a.log"}) == "efficiency/logs/case%201%23a.log"
    assert report_page.log_href("case_2.nii.gz", {"case 1#a.log"}) is None


def test_numbers_are_plain():
    assert pages.number(10210.0, 0) == "10,210" and pages.number(29491200.0, 0) == "29,491,200"
    assert pages.number(0.93456789, 4) == "0.9346" and pages.number(float("nan")) == ""
    assert pages.decimals_for("Liver_DSC") == 4 and pages.decimals_for("NSD-1mm_1") == 4
    assert pages.decimals_for("AUC_GPU_Time") == 0 and pages.decimals_for("Time") == 2
    assert pages.decimals_for("AUC_CPU_Time") == pages.decimals_for("MaxRAM") == 2  # as the official CSV keeps them
    assert pages.decimals_for("rank_DSC") == 3


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_the_report_fits_1400_px_without_sideways_scrolling(report, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("Chromium is not installed (Debian package `chromium`): the layout is not rendered")
    probe = report.with_name("probe.html")
    probe.write_text(report.read_text().replace("</body>", PROBE + "</body>"))
    result = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                             f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={WIDTH},900",
                             "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                            capture_output=True, text=True, timeout=300)
    found = re.search(r'data-layout="(\d+) (\d+) (\d+)"', result.stdout)
    assert found, f"no layout from Chromium: {result.stderr[-500:]}"
    scroll_width, client_width, table_right = map(int, found.groups())
    assert client_width == WIDTH and scroll_width <= client_width and table_right <= client_width
