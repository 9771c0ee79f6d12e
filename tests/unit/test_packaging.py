"""The wheel carries the migrations: an installed jobwarden must find its SQL."""

import zipfile
from pathlib import Path

from hatchling.builders.wheel import WheelBuilder

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_ships_every_migration_and_the_console_script(tmp_path: Path) -> None:
    (wheel,) = WheelBuilder(str(ROOT)).build(directory=str(tmp_path), versions=["standard"])
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for sql in sorted((ROOT / "sql").glob("*.sql")):
            packaged = f"jobwarden/sql/{sql.name}"
            assert packaged in names
            assert archive.read(packaged) == sql.read_bytes()
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "jobwarden = jobwarden.__main__:main" in archive.read(entry_points).decode()
    assert list((ROOT / "sql").glob("*.sql"))
