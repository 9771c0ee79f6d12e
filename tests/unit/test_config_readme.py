"""README's configuration table is rendered from the declarations in jobwarden.config."""

import subprocess
import sys
from pathlib import Path

from jobwarden.config import VARIABLES, markdown_table

README = Path(__file__).resolve().parents[2] / "README.md"
REGENERATE = "python -m jobwarden.config"


def _readme_table() -> str:
    section = README.read_text(encoding="utf-8").split("\n## Configuration\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    return "".join(line + "\n" for line in section.splitlines() if line.startswith("|"))


def test_readme_has_exactly_the_table_the_declarations_render() -> None:
    assert _readme_table() == markdown_table(), (
        "README.md's configuration table and the declarations in "
        "daemon/jobwarden/config.py disagree: replace the table in README.md's "
        f"Configuration section with the output of `{REGENERATE}`"
    )


def test_the_table_names_every_variable_and_marks_each_secret() -> None:
    rows = {line.split("|")[1].strip(" `"): line for line in markdown_table().splitlines()[2:]}
    assert list(rows) == [variable.name for variable in VARIABLES]
    for variable in VARIABLES:
        assert rows[variable.name].endswith(" **Secret.** |") == variable.secret
    assert "| `JOBWARDEN_BASELINE_WINDOW` | `7d` |" in rows["JOBWARDEN_BASELINE_WINDOW"]


def test_the_regeneration_command_prints_the_table() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "jobwarden.config"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout == markdown_table()
