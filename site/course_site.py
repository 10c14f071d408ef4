"""Sphinx extension of the course website (``_config.yml``: ``sphinx.local_extensions``).

It makes the built site work with no network and keeps its pages free of console errors:

* **Offline assets.** MathJax 3, require.js and the ipywidgets HTML manager come from the npm
  packages pinned in ``site/package.json`` (installed by ``npm ci`` into ``site/node_modules``; ``make
  book`` does it). The files listed under ``siteAssets`` there are copied into ``_build/html/_vendor/``
  and ``mathjax_path`` / ``nb_ipywidgets_js`` point at them. They are kept out of ``_static/`` on
  purpose: every script there would be added to every page. When the packages are not installed
  (no npm, no registry) the build says so in one line and the pages load the same libraries from
  the CDN, as Jupyter Book does by default: the site then needs a network for math and widgets.
  ``COURSE_SITE_ASSETS=cdn`` asks for the CDN (the caller has said why already).
* **Each script once.** Some extensions register their inline scripts twice (sphinx-thebe's
  ``const THEBE_JS_URL`` then fails with "Identifier has already been declared"): every page
  keeps the first copy of each script only.
* **The root page.** ``index.html`` sends the reader to the landing page, with a title, the favicon
  and a link for browsers that do not follow the redirect; ``favicon.ico`` sits next to it.
* **The PDF** (``make pdf``, pdflatex): ``site/latex-preamble.tex`` declares the Unicode characters
  the course uses, and any other one prints as "?" instead of stopping LaTeX.
* **The course map.** The ``course-map`` directive (on the landing page) wraps a Markdown table
  whose links name chapters and exercises. A link to a page that is not part of this build (a
  chapter not yet in ``_toc.yml``) is shown as plain text marked "in preparation" instead of
  breaking the strict build; a test keeps the map and the table of contents in sync.
"""

from __future__ import annotations

import fnmatch
import json
import os
import posixpath
import shutil
from html import escape as html_escape
from pathlib import Path

from docutils import nodes
from sphinx import addnodes
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)

SITE = Path(__file__).resolve().parent
VENDOR = "_vendor"  # folder of the built site (next to _static/) that holds the offline assets
CDN_WIDGETS = "https://cdn.jsdelivr.net/npm/"  # where the widget manager looks for third-party widgets
WIDGETS_SETUP = "widgets-setup.js"  # site/widgets-setup.js, served as _vendor/widgets-setup.js


class AssetsUnavailable(RuntimeError):
    """The offline assets cannot be used (the reason is the message)."""


def manifest(site: Path = SITE) -> dict:
    """``site/package.json``: the pinned packages and, under ``siteAssets``, the files the site serves."""
    return json.loads((site / "package.json").read_text(encoding="utf-8"))


def asset_files(site: Path = SITE) -> dict[str, Path]:
    """Map each served path (relative to ``_vendor/``) to its installed file.

    Raises AssetsUnavailable when a package is missing, is not the pinned version, or lacks a file.
    """
    spec = manifest(site)
    pins = spec["dependencies"]
    modules = site / "node_modules"
    files: dict[str, Path] = {}
    for name, asset in spec["siteAssets"].items():
        package = modules / asset["package"]
        meta = package / "package.json"
        if not meta.exists():
            raise AssetsUnavailable(f"{asset['package']} is not installed in site/node_modules")
        version = json.loads(meta.read_text(encoding="utf-8"))["version"]
        if version != pins[asset["package"]]:
            raise AssetsUnavailable(
                f"site/node_modules has {asset['package']} {version}, "
                f"package.json pins {pins[asset['package']]} (run `npm ci` in site/)"
            )
        for pattern in asset["files"]:
            if pattern.endswith("/"):
                found = [p for p in (package / pattern).rglob("*") if p.is_file()]
            elif any(c in pattern for c in "*?["):
                parent = package / posixpath.dirname(pattern)
                found = [p for p in parent.iterdir() if fnmatch.fnmatch(p.name, posixpath.basename(pattern))]
            else:
                found = [package / pattern] if (package / pattern).is_file() else []
            if not found:
                raise AssetsUnavailable(f"{asset['package']} has no {pattern}")
            for path in found:
                files[f"{name}/{path.relative_to(package).as_posix()}"] = path
    return files


def asset_urls(site: Path = SITE) -> tuple[str, dict[str, dict[str, str]]]:
    """``mathjax_path`` and ``nb_ipywidgets_js`` for the served assets.

    Sphinx puts ``_static/`` in front of a relative script path, hence the ``../``.
    """
    spec = manifest(site)["siteAssets"]

    def url(name: str) -> str:
        return f"../{VENDOR}/{name}/{spec[name]['entry']}"

    widgets = {
        url("requirejs"): {},
        f"../{VENDOR}/{WIDGETS_SETUP}": {},  # see site/widgets-setup.js
        url("html-manager"): {"data-jupyter-widgets-cdn": CDN_WIDGETS},
    }
    return url("mathjax"), widgets


def _use_local_assets(app, config) -> None:
    app.course_site_assets = None
    if os.environ.get("COURSE_SITE_ASSETS", "").lower() == "cdn":
        return
    try:
        files = asset_files()
    except AssetsUnavailable as err:
        logger.info(f"[course-site] offline assets not available ({err}): math and widgets load from the CDN")
        return
    config.mathjax_path, config.nb_ipywidgets_js = asset_urls()
    app.course_site_assets = files


def _latex_preamble(app, config) -> None:
    elements = dict(config.latex_elements or {})
    elements["preamble"] = (
        elements.get("preamble", "") + "\n" + (SITE / "latex-preamble.tex").read_text(encoding="utf-8")
    )
    config.latex_elements = elements


def _copy_assets(app, exception) -> None:
    files = getattr(app, "course_site_assets", None)
    if exception is not None or not files or app.builder is None or app.builder.format != "html":
        return
    target = Path(app.outdir) / VENDOR
    shutil.rmtree(target, ignore_errors=True)
    for rel, src in [*files.items(), (WIDGETS_SETUP, SITE / WIDGETS_SETUP)]:
        dest = target / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
    versions = {
        name: manifest()["dependencies"][a["package"]] for name, a in manifest()["siteAssets"].items()
    }
    (target / "versions.json").write_text(json.dumps(versions, indent=1) + "\n", encoding="utf-8")
    logger.info(f"[course-site] offline assets copied to {target} ({len(files)} files)")


ROOT_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8" />
<title>{title}</title>
<meta http-equiv="Refresh" content="0; url={target}" />
<link rel="icon" href="{favicon}" />
<link rel="canonical" href="{target}" />
</head>
<body><p><a href="{target}">{title}</a></p></body>
</html>
"""


def _root_page(app, exception) -> None:
    """``index.html`` (a redirect to the landing page) and ``favicon.ico`` at the top of the site."""
    if (
        exception is not None
        or app.builder is None
        or app.builder.format != "html"
        or app.builder.name != "html"
    ):
        return
    out = Path(app.outdir)
    shutil.copyfile(SITE / "favicon.ico", out / "favicon.ico")
    root = app.config.master_doc
    if root == "index":
        return
    favicon = f"_static/{Path(app.config.html_favicon).name}" if app.config.html_favicon else "favicon.ico"
    title = app.config.html_title or app.config.project
    (out / "index.html").write_text(
        ROOT_PAGE.format(title=html_escape(title), target=f"{root}.html", favicon=favicon), encoding="utf-8"
    )


def _script_key(js) -> tuple:
    attributes = getattr(js, "attributes", {}) or {}
    return (getattr(js, "filename", js) or "", tuple(sorted(attributes.items())))


def _each_script_once(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not isinstance(scripts, list):
        return
    seen, unique = set(), []
    for js in scripts:
        key = _script_key(js)
        if key not in seen:
            seen.add(key)
            unique.append(js)
    scripts[:] = unique


def _ancestors(node: nodes.Node):
    while node is not None:
        yield node
        node = node.parent


class CourseMap(SphinxDirective):
    """The map of the course: Markdown content whose links to pages outside this build become text."""

    has_content = True

    def run(self) -> list[nodes.Node]:
        container = nodes.container(classes=["course-map"])
        self.state.nested_parse(self.content, self.content_offset, container)
        pending, noted_rows = [], set()
        for ref in list(container.findall(addnodes.pending_xref)):
            docname = self._target_doc(ref)
            if docname is None or docname in self.env.found_docs:
                continue
            replacement = [nodes.inline("", "", nodes.Text(ref.astext()), classes=["course-map-pending"])]
            row = next((n for n in _ancestors(ref) if isinstance(n, nodes.row)), ref)
            if id(row) not in noted_rows:  # one note per row of the table
                noted_rows.add(id(row))
                replacement.append(nodes.emphasis("", " (in preparation)"))
            ref.replace_self(replacement)
            pending.append(docname)
        if pending:
            logger.info(
                f"[course-site] course map: {len(pending)} links name pages that are not in this build "
                f"and are shown as in preparation: {', '.join(pending)}"
            )
        return [container]

    def _target_doc(self, ref: addnodes.pending_xref) -> str | None:
        if ref.get("refdomain") == "doc":
            return ref["reftarget"]
        target = str(ref.get("reftarget", "")).split("#", 1)[0]
        if not target or "://" in target:
            return None
        path = posixpath.normpath(posixpath.join(posixpath.dirname(self.env.docname), target))
        stem, suffix = posixpath.splitext(path)
        return stem if suffix in (".ipynb", ".md", "") else None


def setup(app):
    app.connect("config-inited", _use_local_assets)
    app.connect("config-inited", _latex_preamble)
    app.connect("build-finished", _copy_assets)
    app.connect("build-finished", _root_page, priority=400)  # before sphinx-external-toc's redirect
    app.connect("html-page-context", _each_script_once, priority=900)
    app.add_directive("course-map", CourseMap)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
