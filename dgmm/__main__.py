"""``python -m dgmm``: the command line, which lives in the ``pipelines`` package."""

import runpy

# The library never imports the pipelines; this entry point only hands over to them.
runpy.run_module("pipelines.cli", run_name="__main__", alter_sys=True)
