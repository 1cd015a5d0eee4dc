"""Start-up errors an operator can fix say what is wrong in one line, and exit 2; a data
directory is private (0700) whoever made it."""

from __future__ import annotations

import stat
from pathlib import Path

from support.harness import MakeNode


def test_a_data_dir_that_is_a_file_exits_2_naming_it(node_factory: MakeNode) -> None:
    node = node_factory("a-file")
    node.data_dir.parent.mkdir(parents=True, exist_ok=True)
    node.data_dir.write_text("root:x:0:0:root:/root:/bin/bash\n")

    assert node.spawn().wait(60) == 2

    named = [line for line in node.log().splitlines() if str(node.data_dir) in line]
    assert len(named) == 1, node.log()
    assert f"data directory {node.data_dir} is not a directory; give --data-dir a directory" in named[0]
    assert "Errno" not in node.log()


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_every_folder_of_a_data_directory_is_private(node_factory: MakeNode) -> None:
    made = node_factory("new").start()
    with made.client() as admin:
        assert admin.post("/v1/admin/checkpoint").status_code == 200
    folders = [made.data_dir, *(path for path in made.data_dir.rglob("*") if path.is_dir())]
    assert {path.name: oct(mode_of(path)) for path in folders} == {path.name: "0o700" for path in folders}

    loose = node_factory("loose")
    loose.data_dir.mkdir(parents=True)
    loose.data_dir.chmod(0o755)  # as older versions made it
    loose.start()
    assert mode_of(loose.data_dir) == 0o700
    assert "data directory made private" in loose.log()
