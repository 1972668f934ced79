"""MkDocs hooks of flowsim's documentation: pages that stay true to the code.

- `<!-- flowsim:cli COMMAND [SYSTEM] -->` in a page becomes the `--help` text of `flowsim COMMAND`
  (built by the CLI's own parser, for SYSTEM's config fields when given);
- `<!-- flowsim:fields SYSTEM -->` becomes a table of SYSTEM's config fields (option, default, allowed
  values, help), and `<!-- flowsim:fields run -->` the same for the run settings (`flowsim.RunConfig`);
- `<!-- flowsim:systems -->` becomes the table of registered systems (`flowsim systems`), and
  `<!-- flowsim:summary SYSTEM -->` a system's one-line summary and smoke size;
- `<!-- flowsim:figures PREFIX -->` shows every `docs/figures/PREFIX_*.png` (the figures that
  `docs/figures/make_figures.py` draws from small runs of each system);
- the figures under `experiments/results/` are published at `results/...`, so pages link the
  committed results instead of copies;
- in the tutorial notebooks (whose markdown nbconvert renders, not MkDocs), cross-references
  `[text][flowsim.NAME]` become autorefs and links to `.md` pages become the pages' URLs, both checked
  like those of any page;
- every public name of `flowsim` and `flowsim.nn` must appear in an API page as `::: flowsim.NAME`
  (a warning otherwise, which `mkdocs build --strict` turns into a failure).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import pathlib
import posixpath
import re
import types
from typing import Any

from mkdocs.structure.files import File, Files

log = logging.getLogger("mkdocs.plugins.flowsim_docs")
ROOT = pathlib.Path(__file__).resolve().parents[2]
RESULTS = ROOT / "experiments" / "results"
DIRECTIVE = re.compile(r"<!--\s*flowsim:(\w+)\s*([^>]*?)\s*-->")
NOTEBOOK_REF = re.compile(r"\[([^\[\]]+)\]\[(flowsim(?:\.\w+)+)\]")
NOTEBOOK_LINK = re.compile(r'href="([^":#]+\.md)(#[^"]*)?"')
DOCUMENTED = re.compile(r"^:::\s*(flowsim(?:\.nn)?)\.(\w+)\s*$", re.MULTILINE)
_seen: dict[str, set[str]] = {"flowsim": set(), "flowsim.nn": set()}


def on_pre_build(config: Any) -> None:
    """Start each build with no API name seen (`mkdocs serve` rebuilds in one process)."""
    for names in _seen.values():
        names.clear()


def on_files(files: Files, config: Any) -> Files:
    """Publish every PNG under `experiments/results/` at `results/<path>`."""
    for png in sorted(RESULTS.rglob("*.png")):
        uri = "results/" + png.relative_to(RESULTS).as_posix()
        files.append(File.generated(config, uri, abs_src_path=os.fspath(png)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    """Expand the `flowsim:` directives of a page and record the API names it documents."""
    for module, name in DOCUMENTED.findall(markdown):
        _seen[module].add(name)
    return DIRECTIVE.sub(lambda m: _expand(m.group(1), m.group(2).split(), page.file.src_uri), markdown)


def on_page_content(html: str, page: Any, config: Any, files: Files) -> str:
    """Resolve the cross-references and page links of a tutorial notebook's rendered markdown."""
    src = page.file.src_uri
    if not (src.startswith("tutorials/") and src.endswith(".py")):
        return html
    html = NOTEBOOK_REF.sub(r'<autoref identifier="\2">\1</autoref>', html)

    def link(m: re.Match[str]) -> str:
        target = posixpath.normpath(posixpath.join(posixpath.dirname(src), m.group(1)))
        file = files.get_file_from_path(target)
        if file is None:
            log.warning("%s: link to %s, which is not a page", src, m.group(1))
            return m.group(0)
        return f'href="{file.url_relative_to(page.file)}{m.group(2) or ""}"'

    return NOTEBOOK_LINK.sub(link, html)


def on_post_build(config: Any) -> None:
    """Warn about every public name of `flowsim` and `flowsim.nn` that no API page documents."""
    import flowsim

    for module, obj in (("flowsim", flowsim), ("flowsim.nn", flowsim.nn)):
        public = {n for n in dir(obj) if not n.startswith("_") and not isinstance(getattr(obj, n), types.ModuleType)}
        missing = sorted(public - _seen[module])
        if missing:
            log.warning("API reference: no page documents %s", ", ".join(f"{module}.{n}" for n in missing))


def _expand(kind: str, args: list[str], where: str) -> str:
    """The markdown of one directive; an unknown directive or argument is a warning."""
    try:
        if kind == "cli":
            return _cli_help(*args)
        if kind == "fields":
            return _fields_table(*args)
        if kind == "systems":
            return _systems_table()
        if kind == "summary":
            return _summary(*args)
        if kind == "figures":
            return _figures(*args)
    except (KeyError, TypeError, ValueError) as e:
        log.warning("%s: bad directive flowsim:%s %s (%s)", where, kind, " ".join(args), e)
        return ""
    log.warning("%s: unknown directive flowsim:%s", where, kind)
    return ""


def _cli_help(command: str, system: str | None = None) -> str:
    """`flowsim COMMAND --help` as a fenced block (100 columns wide)."""
    from flowsim._cli_parser import build_parser

    os.environ["COLUMNS"] = "100"
    parser = build_parser(system)
    if command == "flowsim":
        text = parser.format_help()
    else:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        text = sub.choices[command].format_help()
    return f"```text\n{text.rstrip()}\n```"


def _fields_table(system: str) -> str:
    """A markdown table of a system's config fields, or of the run settings for `run`."""
    import flowsim
    from flowsim._fields import allowed

    cls = flowsim.RunConfig if system == "run" else flowsim.get_system(system).config_type
    rows = ["| option | default | allowed | meaning |", "| --- | --- | --- | --- |"]
    for f in dataclasses.fields(cls):
        text = str(f.metadata.get("help", "")).replace("|", "\\|")
        opt = "--" + f.name.replace("_", "-")
        values = allowed(f).replace("|", "\\|")
        rows.append(f"| `{opt}` | `{f.default}` | {values} | {text} |")
    return "\n".join(rows)


def _systems_table() -> str:
    """The registered systems: name (linked to its page), summary, smoke size."""
    import flowsim

    rows = ["| system | what it is | page |", "| --- | --- | --- |"]
    for name in flowsim.registered_systems():
        summary = flowsim.get_system(name).summary.replace("|", "\\|")
        rows.append(f"| `{name}` | {summary} | [{name}]({name}.md) |")
    return "\n".join(rows)


def _summary(system: str) -> str:
    """A system's registered one-line summary and its smoke size (what the contract test runs)."""
    import flowsim

    s = flowsim.get_system(system)
    opts = [(k.replace("_", "-"), v) for k, v in s.smoke.items()]
    smoke = " ".join((f"--{k}" if v else f"--no-{k}") if isinstance(v, bool) else f"--{k} {v}" for k, v in opts)
    return (
        f"**`{s.name}`**: {s.summary}.\n\nA run in seconds (the system's smoke size, run by the contract test): "
        f"`flowsim run {s.name} {smoke}`"
    )


def _figures(prefix: str) -> str:
    """Every `docs/figures/<prefix>_*.png`, as images linked from a page one level below docs/."""
    pngs = sorted((ROOT / "docs" / "figures").glob(f"{prefix}_*.png"))
    if not pngs:
        return "*(No figure of this system in `docs/figures/` yet: `python docs/figures/make_figures.py`.)*"
    return "\n\n".join(f"![{p.stem[len(prefix) + 1 :]}](../figures/{p.name})" for p in pngs)
