"""Hypothesis profiles: ``ci`` (derandomised: the same examples on every machine), ``quick`` (the same, fewer),
``dev`` (quick, random),
``thorough`` (many examples, for a release or a new kernel), ``smoke`` (a few, for meta tests that check the
plumbing of a run) and ``mutants`` (the kill matrix: no shrinking, since a mutant only has to be caught, not
explained)."""

from hypothesis import HealthCheck, Phase, settings

_COMMON = dict(
    deadline=None,  # first calls compile kernels or import libraries; hangs are the guard's job
    print_blob=True,  # failures print @reproduce_failure for the repro command
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

settings.register_profile("ci", derandomize=True, database=None, max_examples=20, **_COMMON)
# derandomize=False said explicitly: a profile inherits the settings in force when it is registered, and where the
# environment variable CI is set hypothesis' own default is derandomized, which would turn these into the ci profile
settings.register_profile("dev", derandomize=False, max_examples=8, **_COMMON)
settings.register_profile("thorough", derandomize=False, max_examples=400, **_COMMON)
# a second, shorter look (CI's run of what another environment or a fuller run already covers: the libraries, the
# triton 3.6 interpreter): the same derandomized examples on every machine, fewer of them
settings.register_profile("quick", derandomize=True, database=None, max_examples=8, **_COMMON)
# the plumbing of a run (a meta test's subprocess): every test reached, a few examples each
settings.register_profile("smoke", derandomize=True, database=None, max_examples=3, **_COMMON)
settings.register_profile("mutants", derandomize=True, database=None, max_examples=20,
                          phases=(Phase.explicit, Phase.generate), **_COMMON)

PROFILES = ("ci", "quick", "dev", "thorough", "mutants", "smoke")
DEFAULT = "ci"
