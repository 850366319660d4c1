"""Render the architecture diagram (docs/architecture.mmd, also in the README) to docs/architecture.png and .svg.

    python -m scripts.render_diagram [--check]

Mermaid runs in headless Chromium (Playwright driving Debian's ``chromium``);
its JavaScript comes from the npm registry's ``mermaid`` package, fetched once
into ``.cache/``. ``--check`` only verifies that the README's block equals the
source file and that Mermaid parses it, without writing images.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tarfile
from pathlib import Path

from devtools.browser import chromium
from devtools.paths import ROOT

SOURCE = ROOT / "docs" / "architecture.mmd"
MERMAID_VERSION = "11.17.2"
CACHE = ROOT / ".cache" / f"mermaid-{MERMAID_VERSION}.min.js"


def readme_block() -> str:
    """The Mermaid block of the README."""
    match = re.search(r"```mermaid\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    if match is None:
        raise SystemExit("README.md has no ```mermaid block")
    return match.group(1)


def mermaid_js() -> str:
    """mermaid.min.js from the npm registry, cached."""
    if not CACHE.exists():
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["npm", "pack", f"mermaid@{MERMAID_VERSION}", "--silent", "--pack-destination", str(CACHE.parent)],  # noqa: S607 - npm from PATH
            check=True,
            capture_output=True,
        )
        tarball = CACHE.parent / f"mermaid-{MERMAID_VERSION}.tgz"
        with tarfile.open(tarball) as tar:
            member = tar.extractfile("package/dist/mermaid.min.js")
            if member is None:
                raise SystemExit(f"{tarball} has no dist/mermaid.min.js")
            CACHE.write_bytes(member.read())
        tarball.unlink()
    return CACHE.read_text()


def render(source: str, out: Path | None) -> str:
    """Render ``source`` to an SVG string; with ``out``, also write ``out``.svg and ``out``.png."""
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 2400, "height": 1400}, device_scale_factor=1)
        page.set_content("<html><body style='margin:0;background:white'><div id='d'></div></body></html>")
        page.add_script_tag(content=mermaid_js())
        svg = page.evaluate(
            """async (src) => {
                mermaid.initialize({startOnLoad: false, theme: 'default', flowchart: {htmlLabels: true}});
                const {svg} = await mermaid.render('architecture', src);
                document.getElementById('d').innerHTML = svg;
                return svg;
            }""",
            source,
        )
        if out is not None:
            out.with_suffix(".svg").write_text(svg)
            page.locator("#d svg").screenshot(path=str(out.with_suffix(".png")))
    return svg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="verify only; write nothing")
    args = parser.parse_args()
    source = SOURCE.read_text()
    if readme_block() != source:
        sys.exit("README.md's mermaid block differs from docs/architecture.mmd: copy one into the other")
    render(source, None if args.check else SOURCE.with_suffix(""))
    print("diagram ok" if args.check else f"wrote {SOURCE.with_suffix('.png')} and .svg")


if __name__ == "__main__":
    main()
