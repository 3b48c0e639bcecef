"""The README documents the per-token table: every schema column appears in its tables."""

from pathlib import Path

from creditlens import schema

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_documents_every_column():
    text = README.read_text()
    for name in [*schema.TOKEN_COLUMNS, *schema.OPTIONAL_COLUMNS]:
        assert f"`{name}`" in text, f"README.md does not document column {name!r}"


def test_readme_quickstart_is_make_demo_then_make_test():
    text = README.read_text()
    quickstart = text.split("## Quickstart", 1)[1].split("##", 1)[0]
    commands = [line.strip() for line in quickstart.splitlines() if line.startswith("    ")]
    assert commands == ["make demo", "make test"]


def test_readme_python_example_runs():
    text = README.read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```python\n")[1:]]
    assert blocks
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
