"""The published asv dashboard loads no script or stylesheet from another host (benchmarks/offline_dashboard.py).

Where asv is installed (tox -e bench), `asv publish` runs on the committed results in benchmarks/results into a
temporary folder and every published page is checked; elsewhere the rewriting is checked on asv 0.6.6's CDN tags
(copied below from its www/index.html). The vendored files asv's integrity hashes describe must be those very files.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import offline_dashboard as od

ROOT = Path(__file__).resolve().parents[2]

# asv 0.6.6, asv/www/index.html: its external scripts and stylesheet, as published (used when asv is not installed)
ASV_066_CDN_TAGS = """
    <script src="https://code.jquery.com/jquery-3.3.1.min.js" integrity="sha256-FgpCb/KJQlLNfOu91ta32o/NMZxltwRo8QtmkMRdAu8=" crossorigin="anonymous" onerror="js_load_failure()"></script>
    <script src="https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.min.js" integrity="sha512-eO1AKNIv7KSFl5n81oHCKnYLMi8UV4wWD1TcLYKNTssoECDuiGhoRsQkdiZkl8VUjoms2SeJY7zTSw5noGSqbQ==" crossorigin="anonymous" referrerpolicy="no-referrer" onerror="js_load_failure()"></script>
    <script src="https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.time.min.js" integrity="sha512-lcRowrkiQvFli9HkuJ2Yr58iEwAtzhFNJ1Galsko4SJDhcZfUub8UxGlMQIsMvARiTqx2pm7g6COxJozihOixA==" crossorigin="anonymous" referrerpolicy="no-referrer" onerror="js_load_failure()"></script>
    <script src="https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.selection.min.js" integrity="sha512-3EUG0t3qfbLaGN3FXO86i+57nvxHOXvIb/xMSKRrCuX/HXdn1bkbqwAeLd6U1PDmuEB2cnKhfM+SGLAVQbyjWQ==" crossorigin="anonymous" referrerpolicy="no-referrer" onerror="js_load_failure()"></script>
    <script src="https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.categories.min.js" integrity="sha512-x4QGSZkQ57pNuICMFFevIhDer5NVB5eJCRmENlCdJukMs8xWFH8OHfzWQVSkl9VQ4+4upPPTkHSAewR6KNMjGA==" crossorigin="anonymous" referrerpolicy="no-referrer" onerror="js_load_failure()"></script>
    <script language="javascript" type="text/javascript" src="jquery.flot.axislabels.js"></script>
    <script src="https://cdn.jsdelivr.net/npm/flot-orderbars@1.0.0/js/jquery.flot.orderBars.js" integrity="sha256-OXNbT0b5b/TgglckAfR8VaJ2ezZv0dHoIeRKjYMKEr8=" crossorigin="anonymous" onerror="js_load_failure()"></script>
    <script src="https://cdnjs.cloudflare.com/ajax/libs/stupidtable/1.0.1/stupidtable.min.js" integrity="sha512-GM3Ds3dUrgkpKVXc+4RxKbQDoeTemdlzXxn5d/QCOJT6EFdEufu1UTVBpIFDLd6YjIhSThNe+zpo1mwqzNq4GQ==" crossorigin="anonymous" referrerpolicy="no-referrer" onerror="js_load_failure()"></script>
    <script src="https://cdnjs.cloudflare.com/ajax/libs/blueimp-md5/2.19.0/js/md5.min.js" integrity="sha512-8pbzenDolL1l5OPSsoURCx9TEdMFTaeFipASVrMYKhuYtly+k3tcsQYliOEKTmuB1t7yuzAiVo+yd7SJz+ijFQ==" crossorigin="anonymous" referrerpolicy="no-referrer" onerror="js_load_failure()"></script>
    <script src="https://cdn.jsdelivr.net/npm/bootstrap@3.1.1/dist/js/bootstrap.min.js" integrity="sha256-iY0FoX8s/FEg3c26R6iFw3jAtGbzDwcA5QJ1fiS0A6E=" crossorigin="anonymous" onerror="js_load_failure()"></script>
    <link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/bootstrap@3.1.1/dist/css/bootstrap.min.css" integrity="sha256-6VA0SGkrc43SYPvX98q/LhHwm2APqX5us6Vuulsafps=" crossorigin="anonymous">
    <link href="asv.css" rel="stylesheet" type="text/css"/>
"""  # noqa: E501


def asv_template() -> str:
    """asv's own index.html where asv is installed, else its CDN tags above."""
    try:
        import asv
    except ImportError:
        return ASV_066_CDN_TAGS
    return (Path(asv.__file__).parent / "www" / "index.html").read_text(encoding="utf-8")


def integrity_hash(path: Path, algorithm: str) -> str:
    return f"{algorithm}-" + base64.b64encode(hashlib.new(algorithm, path.read_bytes()).digest()).decode()


def assert_offline(page: str, folder: Path) -> None:
    assert od.external_references(page) == []
    for tag in od.TAG.findall(page):
        assert not re.search(r"\b(integrity|crossorigin)\b", tag), tag  # a local file would be refused
    for ref in od.tag_references(page):
        assert (folder / ref).is_file(), ref


def test_the_check_finds_what_asv_loads_from_cdns():
    refs = od.external_references(asv_template())
    assert len(refs) == 10 and all(ref.startswith("https://") for ref in refs)
    page = """<link href='//cdn.example/x.css'><script type="text/javascript" src="HTTP://cdn.example/y.js"></script>
              <script src="asv.js"></script><link rel="icon" href="data:,"><a href="https://example.org/">home</a>"""
    assert od.external_references(page) == ["//cdn.example/x.css", "HTTP://cdn.example/y.js"]


def test_every_cdn_reference_of_asv_maps_to_a_vendored_file():
    refs = od.external_references(asv_template())
    assert set(refs) <= set(od.ASSETS), set(refs) - set(od.ASSETS)  # asv added a dependency: vendor it first
    page = od.rewrite_page(asv_template(), prefix=str(od.VENDOR))
    assert od.external_references(page) == []
    assert "js_load_failure()" in page  # only the URL and the CDN attributes change
    local = [ref for ref in od.tag_references(page) if ref.startswith(str(od.VENDOR))]
    assert len(local) == len(refs) and all(Path(ref).is_file() for ref in local)


def test_vendored_files_are_the_files_asv_names():
    template = asv_template()
    for url, (relative, expected) in od.ASSETS.items():
        path = od.VENDOR / relative
        assert path.is_file(), relative
        if expected is not None:  # the very file the CDN serves: asv's own integrity hash must match it
            algorithm = expected.split("-", 1)[0]
            assert integrity_hash(path, algorithm) == expected, relative
            assert f'src="{url}" integrity="{expected}"' in template or f'href="{url}" integrity="{expected}"' \
                in template, url
    for package in od.VENDOR.iterdir():
        if package.is_dir():
            assert any(f.name.startswith("LICENSE") for f in package.iterdir()), f"{package.name}: no licence"


def test_an_unknown_external_dependency_is_an_error(tmp_path):
    (tmp_path / "index.html").write_text(od.rewrite_page(asv_template()) +
                                         '<script src="https://cdn.example/new-plugin.js"></script>')
    with pytest.raises(od.ExternalReference, match="new-plugin.js"):
        od.make_offline(tmp_path)


def test_published_dashboard_loads_only_local_files(tmp_path):
    pytest.importorskip("asv", reason="asv is not installed here (tox -e bench installs it)")
    html = tmp_path / "asv"
    env = {**os.environ, "HOME": str(tmp_path / "home")}  # asv writes nothing outside the temporary folder
    subprocess.run([sys.executable, "-m", "asv", "publish", "--no-pull", "--html-dir", str(html)], cwd=ROOT,
                   env=env, check=True, capture_output=True, timeout=300)
    before = (html / "index.html").read_text(encoding="utf-8")
    assert od.external_references(before)  # asv's own page needs the network: the check below can fail
    pages = od.make_offline(html)
    assert {p.name for p in pages} >= {"index.html", "error.html"}
    for page in pages:
        assert_offline(page.read_text(encoding="utf-8"), html)
    assert (html / "graphs").is_dir()  # the committed results were published
    for package in od.VENDOR.iterdir():
        if package.is_dir():
            assert any((html / od.PUBLISHED_VENDOR / package.name).glob("LICENSE*")), package.name
