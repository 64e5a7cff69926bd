"""Our lm-eval task definitions (YAML + utils beside each) and the helpers they share.

lm-eval reads the YAML files under this folder through ``TaskManager(include_path=...)``; the Python modules here
are imported by the tasks' ``utils.py`` files. ``CHANGELOG.md`` records every change to a task's prompt, extraction
or metric together with the version bump in that task's ``metadata.version``.
"""
