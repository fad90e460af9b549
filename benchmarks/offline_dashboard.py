"""Make the published asv dashboard open without a network: its scripts and styles from the repository.

asv 0.6.6's index.html loads jQuery, Flot (and its plugins), stupidtable, blueimp-md5 and Bootstrap from CDNs;
offline it only shows "One or more external (JavaScript) dependencies of airspeed velocity failed to load". The
same files, from their npm packages and with their licences, are vendored in vendor/asv-dashboard/ (its README
says where each one comes from). After `asv publish`, this copies them into the published folder and points
every <script src> and <link href> at the copy; the CDN attributes go too (integrity and crossorigin would make
the browser refuse a local file). Any other external script or stylesheet left in a page is an error: a newer
asv would have added a dependency that must be vendored first.

    python benchmarks/offline_dashboard.py [HTML_DIR]      (default: asv.conf.json's html_dir)

Run by benchmarks/run_asv.sh after `asv publish`. The dashboard reads its data with XMLHttpRequest, which
browsers refuse on file:// pages: serve the folder (`asv preview`, or `python -m http.server -d reports/out/asv`)
and open it on localhost; nothing is fetched from elsewhere.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENDOR = ROOT / "vendor" / "asv-dashboard"
PUBLISHED_VENDOR = "vendor"  # the copy's folder inside the published dashboard

# asv 0.6.6's CDN references -> the vendored file (relative to VENDOR). Where the vendored file is the very file
# the CDN serves, asv's integrity hash for it is kept here and checked by property_tests/meta/test_asv_offline.py.
ASSETS: dict[str, tuple[str, str | None]] = {
    "https://code.jquery.com/jquery-3.3.1.min.js":
        ("jquery-3.3.1/jquery.min.js", "sha256-FgpCb/KJQlLNfOu91ta32o/NMZxltwRo8QtmkMRdAu8="),
    # cdnjs serves its own minified builds of Flot 0.8.3; npm ships the unminified sources of the same release
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.min.js": ("flot-0.8.3/jquery.flot.js", None),
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.time.min.js":
        ("flot-0.8.3/jquery.flot.time.js", None),
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.selection.min.js":
        ("flot-0.8.3/jquery.flot.selection.js", None),
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.categories.min.js":
        ("flot-0.8.3/jquery.flot.categories.js", None),
    "https://cdn.jsdelivr.net/npm/flot-orderbars@1.0.0/js/jquery.flot.orderBars.js":
        ("flot-orderbars-1.0.0/jquery.flot.orderBars.js", "sha256-OXNbT0b5b/TgglckAfR8VaJ2ezZv0dHoIeRKjYMKEr8="),
    # stupidtable 1.0.1 is on cdnjs only; npm has 1.1.3 of the same plugin (same API: stupidtable(sortFns),
    # the aftertablesort event)
    "https://cdnjs.cloudflare.com/ajax/libs/stupidtable/1.0.1/stupidtable.min.js":
        ("stupid-table-plugin-1.1.3/stupidtable.min.js", None),
    "https://cdnjs.cloudflare.com/ajax/libs/blueimp-md5/2.19.0/js/md5.min.js":
        ("blueimp-md5-2.19.0/md5.min.js",
         "sha512-8pbzenDolL1l5OPSsoURCx9TEdMFTaeFipASVrMYKhuYtly+k3tcsQYliOEKTmuB1t7yuzAiVo+yd7SJz+ijFQ=="),
    "https://cdn.jsdelivr.net/npm/bootstrap@3.1.1/dist/js/bootstrap.min.js":
        ("bootstrap-3.1.1/js/bootstrap.min.js", "sha256-iY0FoX8s/FEg3c26R6iFw3jAtGbzDwcA5QJ1fiS0A6E="),
    "https://cdn.jsdelivr.net/npm/bootstrap@3.1.1/dist/css/bootstrap.min.css":
        ("bootstrap-3.1.1/css/bootstrap.min.css", "sha256-6VA0SGkrc43SYPvX98q/LhHwm2APqX5us6Vuulsafps="),
}

TAG = re.compile(r"<(?:script|link)\b[^>]*>", re.IGNORECASE | re.DOTALL)
URL_ATTR = re.compile(r"""\b(src|href)\s*=\s*(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)
CDN_ATTR = re.compile(r"""\s+(?:integrity|crossorigin|referrerpolicy)(?:\s*=\s*(["']).*?\1)?""",
                      re.IGNORECASE | re.DOTALL)
EXTERNAL = re.compile(r"^\s*(?:[a-z][a-z0-9+.-]*:)?//", re.IGNORECASE)  # http://, https://, //host (not data:)


class ExternalReference(RuntimeError):
    """A published page still loads a script or stylesheet from another host."""


def tag_references(page: str) -> list[str]:
    """The src of every <script> and the href of every <link> in an HTML page."""
    return [m.group(3) for tag in TAG.finditer(page) for m in URL_ATTR.finditer(tag.group(0))]


def external_references(page: str) -> list[str]:
    """The script and link references of a page that point to another host (http://, https://, //)."""
    return [ref for ref in tag_references(page) if EXTERNAL.match(ref)]


def rewrite_page(page: str, prefix: str = PUBLISHED_VENDOR) -> str:
    """The page with every known CDN script and stylesheet pointing at prefix/<vendored file>."""

    def local(tag: re.Match) -> str:
        text = tag.group(0)
        for m in URL_ATTR.finditer(text):
            if m.group(3) in ASSETS:
                new = f"{m.group(1)}={m.group(2)}{prefix}/{ASSETS[m.group(3)][0]}{m.group(2)}"
                return CDN_ATTR.sub("", text[:m.start()] + new + text[m.end():])
        return text

    return TAG.sub(local, page)


def make_offline(html_dir: str | Path) -> list[Path]:
    """Copy the vendored assets into html_dir and rewrite its pages; raise ExternalReference if a page still
    loads anything from another host. Returns the rewritten pages."""
    html_dir = Path(html_dir)
    pages = sorted(html_dir.glob("*.html"))
    if not pages:
        raise FileNotFoundError(f"no published pages in {html_dir}: run `asv publish` first")
    shutil.copytree(VENDOR, html_dir / PUBLISHED_VENDOR, dirs_exist_ok=True)  # licence files included
    left = []
    for page in pages:
        text = rewrite_page(page.read_text(encoding="utf-8"))
        page.write_text(text, encoding="utf-8")
        left += [f"{page.name}: {ref}" for ref in external_references(text)]
    if left:
        raise ExternalReference("still loaded from another host (vendor it in vendor/asv-dashboard/ and add it "
                                "to ASSETS in benchmarks/offline_dashboard.py): " + "; ".join(left))
    missing = [f"{page.name}: {ref}" for page in pages for ref in tag_references(page.read_text(encoding="utf-8"))
               if not (html_dir / ref).is_file()]
    if missing:
        raise FileNotFoundError("pages refer to files the published folder lacks: " + "; ".join(missing))
    return pages


def default_html_dir() -> Path:
    return ROOT / json.loads((ROOT / "asv.conf.json").read_text())["html_dir"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/offline_dashboard.py", description=__doc__.split("\n")[0])
    parser.add_argument("html_dir", nargs="?", default=None, help="the published dashboard (default: asv's html_dir)")
    args = parser.parse_args(argv)
    html_dir = Path(args.html_dir) if args.html_dir else default_html_dir()
    try:
        pages = make_offline(html_dir)
    except (ExternalReference, FileNotFoundError) as exc:
        print(f"offline_dashboard: {exc}", file=sys.stderr)
        return 1
    print(f"offline_dashboard: {', '.join(p.name for p in pages)} in {html_dir} load only local files "
          f"({PUBLISHED_VENDOR}/: the vendored scripts and styles with their licences)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
