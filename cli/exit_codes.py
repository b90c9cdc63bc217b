"""Exit codes of every alpa-plan command: documented here, in `--help` and in README.md."""

OK = 0  # success; for `diff`, the plans are identical or within the gates
CHECK_FAILED = 1  # `check` found a problem, or `diff` exceeded a regression gate
BAD_INPUT = 2  # a file or flag is wrong: missing, malformed, inconsistent (also click usage)
INFEASIBLE = 3  # the model does not fit the cluster under the memory budget
INTERNAL_ERROR = 70  # a bug in alpa-plan (EX_SOFTWARE in sysexits.h); please report it

EPILOG = (
    "Exit codes: 0 ok; 1 check or regression gate failed; 2 bad input; "
    "3 infeasible (does not fit in memory); 70 internal error."
)
