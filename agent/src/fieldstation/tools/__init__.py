"""Everyday tools: ``doctor``, ``spikes``, ``rename-series`` and ``export`` (the chores the lab guide did by hand).

:mod:`fieldstation.tools.cli` registers the commands; each tool is its own module and imports its heavy
dependencies (pyarrow) only when it runs.
"""
