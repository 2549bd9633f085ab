"""docs/: every section of docs/method.md that a docstring or test cites (by anchor) exists."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _anchors(md: str) -> set:
    """GitHub's anchors of the Markdown headings: lower case, punctuation
    dropped, spaces to hyphens."""
    out = set()
    for line in md.splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            text = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower())
            out.add(text.replace(" ", "-"))
    return out


def test_anchors_by_hand():
    assert _anchors("# The method\n## Head file format\n### Flips — the one rule") == {
        "the-method", "head-file-format", "flips--the-one-rule"}


def test_cited_sections_of_method_md_exist():
    anchors = _anchors((ROOT / "docs" / "method.md").read_text(encoding="utf-8"))
    cited = {}
    for folder in ("geomatch", "tests", "benchmarks", "docs"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix not in (".py", ".md", ".c", ".h") or not path.is_file():
                continue
            for a in re.findall(r"method\.md#([\w\-]+)", path.read_text(encoding="utf-8")):
                cited.setdefault(a, path.relative_to(ROOT))
    assert len(cited) >= 8
    missing = {a: str(p) for a, p in cited.items() if a not in anchors}
    assert not missing, f"cited sections missing from docs/method.md: {missing}"


def test_no_docstring_cites_a_file_outside_the_repository():
    for folder in ("geomatch", "csrc", "docs", "benchmarks", "tools"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".c", ".h", ".md") and path.is_file():
                text = path.read_text(encoding="utf-8")
                assert "DESIGN.md" not in text and "../shared" not in text, path
