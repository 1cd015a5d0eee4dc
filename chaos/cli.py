"""`kvchaos`: list the scenarios, or run them against a backend and write the reports.

    kvchaos list
    kvchaos run --backend process|docker --scenario NAME|all [--duration S] [--seed N] --report DIR

The exit code is 0 only when every checker of every run passed.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from .backend import Backend
from .process import ProcessBackend
from .report import write_reports
from .runner import RunResult, execute
from .scenarios import SCENARIOS
from .workload import WorkloadConfig


def _docker_backend() -> type[Backend]:
    try:
        from .compose import DockerBackend
    except ImportError as missing:  # the SDK is an extra: the node image has no use for it
        raise RuntimeError(f"it needs the docker SDK: pip install 'kvstore-plus-plus[chaos]' ({missing})") from None
    return DockerBackend


# Each backend's class, loaded when chosen; an instance is built per run from the directory
# the run may keep its files in.
BACKENDS: dict[str, Callable[[], type[Backend]]] = {"process": lambda: ProcessBackend, "docker": _docker_backend}
BackendName = StrEnum("BackendName", {name: name for name in BACKENDS})  # type: ignore[misc]

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)


@app.command("list")
def list_scenarios() -> None:
    """The scenarios, one a line: name and what it does."""
    width = max(map(len, SCENARIOS))
    for scenario in SCENARIOS.values():
        typer.echo(f"{scenario.name:<{width}}  {scenario.summary}")


@app.command()
def run(
    report: Annotated[Path, typer.Option("--report", help="Directory for report.json, report.html and node files.")],
    backend: Annotated[BackendName, typer.Option("--backend", help="Where the cluster runs.")] = "process",  # type: ignore[assignment]
    scenario: Annotated[
        str, typer.Option("--scenario", help="A scenario's name (see `kvchaos list`), or all.")
    ] = "all",
    duration: Annotated[float, typer.Option("--duration", min=1.0, help="Seconds of load per scenario.")] = 20.0,
    seed: Annotated[int, typer.Option("--seed", help="Seeds the workload's choices.")] = 1,
) -> None:
    """Run scenarios; exit 0 only if every checker passed."""
    if scenario != "all" and scenario not in SCENARIOS:
        raise typer.BadParameter(
            f"no scenario {scenario!r}; one of {', '.join(SCENARIOS)} or all", param_hint="--scenario"
        )
    chosen = list(SCENARIOS.values()) if scenario == "all" else [SCENARIOS[scenario]]
    try:
        backend_class = BACKENDS[str(backend.value)]()
        backend_class.prepare()
    except RuntimeError as unavailable:
        typer.echo(f"kvchaos: the {backend.value} backend cannot run here: {unavailable}", err=True)
        raise typer.Exit(2) from None
    results: list[RunResult] = []
    for each in chosen:
        cluster = backend_class(report / "nodes" / each.name)
        result = execute(each, cluster, duration, seed, WorkloadConfig())
        results.append(result)
        failed = [v.name for v in result.verdicts if not v.passed] + (["run broke"] if result.error else [])
        typer.echo(
            f"{each.name}: {'pass' if result.passed else 'FAIL (' + ', '.join(failed) + ')'} in {result.wall_s:.1f} s"
        )
    document = write_reports(report, results)
    typer.echo(f"report: {report / 'report.json'}, {report / 'report.html'}")
    raise typer.Exit(0 if document["passed"] else 1)


def main() -> None:
    app(prog_name="kvchaos")
