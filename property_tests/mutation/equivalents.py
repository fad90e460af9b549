"""Generated mutants that no test can kill, because they compute what the spec computes on every valid input.

Keyed by ``Mutant.key`` (module.function: before -> after), each with the reason it is equivalent. A mutant
listed here is left out of the score; one that a test kills anyway is simply counted killed.
"""

EQUIVALENT: dict[str, str] = {
}
