"""Start-up errors an operator can fix say what is wrong in one line, and exit 2."""

from __future__ import annotations

from collections.abc import Callable

from harness import NodeProcess

MakeNode = Callable[..., NodeProcess]


def test_a_data_dir_that_is_a_file_exits_2_naming_it(node_factory: MakeNode) -> None:
    node = node_factory("a-file")
    node.data_dir.parent.mkdir(parents=True, exist_ok=True)
    node.data_dir.write_text("root:x:0:0:root:/root:/bin/bash\n")

    assert node.spawn().wait(60) == 2

    named = [line for line in node.log().splitlines() if str(node.data_dir) in line]
    assert len(named) == 1, node.log()
    assert f"data directory {node.data_dir} is not a directory; give --data-dir a directory" in named[0]
    assert "Errno" not in node.log()
