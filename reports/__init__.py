"""Conformance reports: ``python -m reports`` renders the property tests' results, the mutants' kill matrix
and asv's benchmark results, with the registry's equations and claims, into reports/out/index.html,
conformance.md and conformance.json. See reports/cli.py for the options.

One module per job: load (results files), conformance (rows -> claims x implementations), kill_matrix,
asv_results, plots, html, markdown, formatting (what HTML and Markdown share).
"""
