"""Every chaos scenario, run through `kvchaos run` on the process backend with short loads:
each must pass every checker and write both reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kvstore.chaos.cli import app
from kvstore.chaos.scenarios import SCENARIOS
from support.harness import CHEAP_HASHING

DURATION_S = 4


@pytest.mark.timeout(90)
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_scenario_passes_on_the_process_backend(scenario: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in CHEAP_HASHING.items():
        monkeypatch.setenv(name, value)
    arguments = ["run", "--backend", "process", "--scenario", scenario, "--duration", str(DURATION_S), "--seed", "7"]
    outcome = CliRunner().invoke(app, [*arguments, "--report", str(tmp_path)])
    report = json.loads((tmp_path / "report.json").read_text())
    (run,) = report["runs"]
    failed = [checker for checker in run["checkers"] if not checker["passed"]]
    assert outcome.exit_code == 0 and report["passed"], (outcome.output, run["error"], failed)
    assert run["scenario"] == scenario and run["faults"] and run["lost_write_count"] == 0
    assert run["ops"]["acknowledged"] > 100 and len(run["checkers"]) >= 3
    html = (tmp_path / "report.html").read_text()
    assert "<svg" in html and "<script" not in html and "<link" not in html


def test_list_names_every_scenario_and_run_refuses_unknown_names(tmp_path: Path) -> None:
    runner = CliRunner()
    listed = runner.invoke(app, ["list"])
    assert listed.exit_code == 0 and [line.split()[0] for line in listed.output.splitlines()] == list(SCENARIOS)
    unknown = runner.invoke(app, ["run", "--scenario", "nope", "--report", str(tmp_path)])
    assert unknown.exit_code == 2 and "no scenario 'nope'" in unknown.output
    no_backend = runner.invoke(app, ["run", "--backend", "vm", "--scenario", "promote", "--report", str(tmp_path)])
    assert no_backend.exit_code == 2 and not (tmp_path / "report.json").exists()
