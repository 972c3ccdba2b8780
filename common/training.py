"""What both trainers share: the non-finite guard, the TensorBoard writer, the stop report, seeding per rank
and the result schema."""
from __future__ import annotations

# One limit flag, same name and meaning in both trainers (--max-nonfinite-steps / --max_nonfinite_steps).
NONFINITE_HELP = "non-finite steps are skipped with a warning; stop after this many in a row"
NONFINITE_LIMIT = 10  # default of that flag in both trainers
