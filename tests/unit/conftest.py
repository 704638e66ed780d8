"""Prints the versions of the external tools that the manifest and image checks
used (tests/k8s_tools.py), so every run records them."""

from __future__ import annotations


def pytest_terminal_summary(terminalreporter):
    import k8s_tools

    if k8s_tools.VERSIONS:
        terminalreporter.section("tools used by the manifest and image checks")
        for tool, said in sorted(k8s_tools.VERSIONS.items()):
            terminalreporter.write_line(f"{tool}: {said}")
