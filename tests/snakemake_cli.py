"""Snakemake's own command line (``snakemake.cli.main``), run by ``.venv-snakemake``'s Python
for tests/test_snakemake_tes_e2e.py, with one thing changed: the TES executor plugin's first
status check comes after 1 s instead of its fixed 40 s.

The plugin waits ``init_seconds_before_status_checks = 40`` "until the TES backend has job
info available"; the hub has it as soon as a task is created, and the wait is not an option
of the command line. Every run, refused ones included, would otherwise wait it out. The plugin
and Snakemake are otherwise untouched: the same code asks the hub about the same tasks, only
sooner (so it also sees them QUEUED and RUNNING, not only ended).
"""

import dataclasses
import sys

import snakemake_executor_plugin_tes as plugin

plugin.common_settings = dataclasses.replace(plugin.common_settings, init_seconds_before_status_checks=1)

from snakemake.cli import main  # noqa: E402  (after the plugin's settings are changed)

if __name__ == "__main__":
    sys.exit(main())
