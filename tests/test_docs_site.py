"""The documentation site: `mkdocs build --strict` succeeds (a broken link or anchor between pages fails it),
every page under docs/ is in the nav, and the links of README.md and CONTRIBUTING.md resolve."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# README links to what other parts of the project provide; absent from a checkout that lacks them, they are
# reported as skips, never as passes
PENDING = {
    "notebooks/": "the notebooks folder (tour, chapters, exercises)",
    "docs/book.md": "the page of minigpt.book",
}


def _mkdocs_available() -> bool:
    try:
        import mkdocs  # noqa: F401
    except ImportError:
        return False
    return True


def _nav_pages(nav) -> list[str]:
    found = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        found += _nav_pages(value) if isinstance(value, list) else [value]
    return found


def _config() -> dict:
    yaml = pytest.importorskip("yaml", reason="PyYAML (installed with mkdocs) reads mkdocs.yml")
    return yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))


def test_mkdocs_build_strict(tmp_path):
    if not _mkdocs_available():
        pytest.skip("mkdocs is not installed (pip install -e \".[docs]\")")
    site = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f",
                        str(ROOT / "mkdocs.yml"), "-d", str(site)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"mkdocs build --strict failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    assert (site / "index.html").exists() and (site / "search" / "search_index.json").exists()


def test_strict_build_fails_on_a_broken_anchor(tmp_path):
    """The validation settings of mkdocs.yml turn a link to a missing anchor or page into a failure."""
    if not _mkdocs_available():
        pytest.skip("mkdocs is not installed (pip install -e \".[docs]\")")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# Home\n\n[a](other.md#no-such-heading)\n", encoding="utf-8")
    (docs / "other.md").write_text("# Other\n\n## A heading\n", encoding="utf-8")
    cfg = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    cfg = re.sub(r"(?ms)^nav:.*", "nav:\n  - Home: index.md\n  - Other: other.md\n", cfg)
    (tmp_path / "mkdocs.yml").write_text(cfg, encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f",
                        str(tmp_path / "mkdocs.yml"), "-d", str(tmp_path / "site")], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode != 0 and "no-such-heading" in r.stdout + r.stderr


def test_every_page_is_in_the_nav():
    cfg = _config()
    nav = set(_nav_pages(cfg["nav"]))
    pages = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    assert not pages - nav, f"pages missing from the nav of mkdocs.yml: {sorted(pages - nav)}"
    assert not nav - pages, f"the nav of mkdocs.yml names pages that do not exist: {sorted(nav - pages)}"
    assert cfg.get("strict") is True
    assert {"search"} <= {p if isinstance(p, str) else next(iter(p)) for p in cfg.get("plugins", [])}


def _links(text: str) -> list[str]:
    text = re.sub(r"(?ms)^```.*?^```", "", text)  # not inside code blocks
    return [m for m in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"^[a-z]+:", m)]


def _anchors(md: str) -> set[str]:
    """GitHub-style anchors of a Markdown file's headings."""
    out = set()
    for line in md.splitlines():
        m = re.match(r"^#{1,6}\s+(.*)", line)
        if m:
            title = re.sub(r"[`*]", "", m.group(1)).strip().lower()
            out.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", title)))
    return out


@pytest.mark.parametrize("page", ["README.md", "CONTRIBUTING.md"])
def test_links_resolve(page):
    text = (ROOT / page).read_text(encoding="utf-8")
    broken, pending = [], []
    for link in _links(text):
        path, _, anchor = link.partition("#")
        target = (ROOT / page).parent / path if path else ROOT / page
        if not target.exists():
            (pending if path in PENDING else broken).append(link)
            continue
        if anchor and target.suffix == ".md" and anchor not in _anchors(target.read_text(encoding="utf-8")):
            broken.append(link)
    assert not broken, f"{page} links to what does not exist: {broken}"
    if pending:
        pytest.skip(f"{page} links to parts not in this checkout yet: {pending} "
                    f"({'; '.join(PENDING[p.partition('#')[0]] for p in pending)})")


def test_readme_is_the_first_hour():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) < 250
    for needed in ("Python 3.10", "venv", "minigpt download", "--from", "MINIGPT_DATA", "## I want to",
                   "## Troubleshooting", "docs/", "notebooks/"):
        assert needed in text, needed
    for chapter in ("2.", "3.", "4.", "5.", "6.", "7.", "D.", "E."):
        assert re.search(rf"^\| {re.escape(chapter)} ", text, re.M), f"chapter {chapter} missing from the map"
    second = 'pip install -e ".[test]" && python -m pytest -q'  # the CI script runs the second command
    assert second in text and second in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_what_is_where_lists_each_path_once():
    text = (ROOT / "docs" / "contributing.md").read_text(encoding="utf-8")
    section = text[text.index("## What is where"):text.index("\n## ", text.index("## What is where") + 1)]
    rows = [ln.split("|")[1] for ln in section.splitlines() if ln.startswith("| `")]
    paths = [p for row in rows for p in re.findall(r"`([^`]+)`", row)]
    assert len(rows) >= 10 and len(paths) == len(set(paths)), f"paths listed twice: {paths}"
    for p in paths:
        if p.startswith("minigpt/"):
            assert (ROOT / p).exists(), p


def test_one_pretraining_time_and_one_quickstart_run():
    """The quick start's time is stated once, the same everywhere; later pages build on runs/quickstart
    instead of training the same model again under another name."""
    pages = [ROOT / "README.md"] + sorted((ROOT / "docs").rglob("*.md"))
    for page in pages:
        text = page.read_text(encoding="utf-8")
        for stale in ("runs/base", "step-400", "73 s", "about two minutes", "about 2 minutes"):
            assert stale not in text, f"{page.name}: {stale!r}"
        for m in re.finditer(r"(\d+ min \d+ s)[^.]*?(?:2 idle cores|idle cores)", text):
            assert m.group(1) == "2 min 30 s", f"{page.name}: another pretraining time {m.group(0)!r}"
