"""The suite's pytest plugins, one job each; property_tests/conftest.py adds the options and registers them.

    options        the command-line options (group "eqspec") and which implementations a run is about
    parametrize    each property test over the implementations of its operation (devices, dtypes, capabilities,
                   documented deviations), its examples counted, fewer for the Triton interpreter
    rows           one result row per test phase, assembled where the test ran (an xdist worker): what ran, what
                   it measured, and for a failure its kind, the falsifying example and the repro command
    results        the controller's writer: rows to a .jsonl as they arrive, the whole run to one JSON file
    generated      --generated-mutants: each mutant's tests together, the rest skipped after its first kill
"""
