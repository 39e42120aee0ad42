"""The bandit and allocation maths: arm statistics in, weights and bucket tables out.

Pure numpy and the standard library, no I/O, importable without the web stack or a database
(DESIGN.md §6). Policies, posterior sampling, guards, estimates and statistical tests live here,
with the minimal-movement allocation tables (``allocation``) and the planning of a flag's next version
(``planning``). ``banditflags_server.bandit`` re-exports the public names for DESIGN.md's contract.
"""
