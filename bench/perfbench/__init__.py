"""perfcgi's benchmark engine: plans the steps, drives the load tools, samples the
processes, and writes results that report.py turns into the report."""
