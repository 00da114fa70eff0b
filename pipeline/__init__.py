"""X-ray Attribute Explorer pipeline: everything that is not the web app.

simulate → train → infer → metrics → embed, written as runs into the run store (see pipeline/store).
"""

import os

__version__ = "0.1.0"

# OpenMP threads that spin while waiting made torch 3-6× slower on a busy 2-core machine (measured
# in benchmarks/RESULTS.md); passive waiting costs nothing when idle. It must be set before torch
# loads OpenMP, hence here, the first module any pipeline import runs.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
