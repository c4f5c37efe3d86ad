"""The documentation stays true to the code: the configuration page is the generator's
output, the README stays short with its three commands on the first screen, and the
links of the README and the site's navigation point at files that exist."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# lines a terminal or a repository page shows before the reader scrolls
FIRST_SCREEN_LINES = 25
README_MAX_LINES = 200


def _config_reference():
    """scripts/config_reference.py as a module (scripts/ is not a package)."""
    name = "config_reference"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, ROOT / "scripts" / "config_reference.py"
        )
        module = importlib.util.module_from_spec(spec)
        # dataclasses look their module up in sys.modules while the class is built
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def test_configuration_page_is_the_generators_output():
    committed = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == _config_reference().render(ROOT), (
        "docs/configuration.md differs from scripts/config_reference.py's output: "
        "run `make docs` and commit the page"
    )


def test_configuration_page_lists_every_schema_key():
    from wgangp.config.schema import schema_keys

    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([\w.]+)` \|", page, flags=re.M))
    missing = [key for key in schema_keys() if key not in documented]
    assert missing == []


def test_configuration_page_takes_the_comment_above_a_field(tmp_path):
    schema = tmp_path / "wgangp" / "config" / "schema.py"
    schema.parent.mkdir(parents=True)
    schema.write_text(
        "from dataclasses import dataclass, field\n\n"
        "@dataclass\nclass PartConfig:\n"
        '    """One part."""\n\n'
        "    # how many, at least 1\n"
        "    # (two lines)\n"
        "    count: int = 3\n"
        '    mode: str = "auto"  # auto | on | off\n\n'
        "@dataclass\nclass Config:\n"
        "    part: PartConfig = field(default_factory=PartConfig)\n"
        "    resume: str | None = None\n"
    )
    group = tmp_path / "configs" / "part"
    group.mkdir(parents=True)
    (group / "big.yaml").write_text("# @package _global_\n# A big part.\n# More.\ncount: 9\n")
    page = _config_reference().render(tmp_path)
    count = "| `part.count` | <code>int</code> | <code>3</code> | how many, at least 1 (two lines) "
    count += "|"
    assert count in page
    mode = "| `part.mode` | <code>str</code> | <code>auto</code> | auto &#124; on &#124; off |"
    assert mode in page
    assert "| `resume` | <code>str &#124; None</code> | <code>null</code> | — |" in page
    assert "| `big` | A big part. |" in page
    assert "One part." in page


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES


def test_readme_first_screen_has_the_three_commands():
    first = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()[:FIRST_SCREEN_LINES]
    for command in ("make install", "make test", "wgangp-train"):
        assert any(re.match(rf"{re.escape(command)}(\s+#|$)", line) for line in first), command


def _relative_links(markdown: str) -> list[str]:
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", markdown)
    return [link for link in links if "://" not in link and not link.startswith("mailto:")]


def test_readme_links_point_at_files():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [link for link in _relative_links(readme) if not (ROOT / link).exists()]
    assert missing == []


def test_site_navigation_lists_every_page():
    mkdocs = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = re.findall(r":\s*([\w/-]+\.md)\s*$", mkdocs, flags=re.M)
    pages = sorted(p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md"))
    assert sorted(nav) == pages
