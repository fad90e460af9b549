"""Other implementations of the specs' operations: torch/, triton/, thirdparty/ (adapters), and users' own.

Each family's ``__init__`` declares its implementations in the registry without importing the code behind
them; ``implementations.user`` adds the ones a user points the suite at.
"""
