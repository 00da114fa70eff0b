"""The one exception type for bad input: the command line prints its message and exits 2.

Raise PipelineError with a message that names the file (or array) and the problem.
"""


class PipelineError(Exception):
    """Bad input or data the user can fix; shown to them as one clear line, not a traceback."""


class Stopped(PipelineError):
    """Work stopped because should_stop() said so; what was written before it is kept whole."""
