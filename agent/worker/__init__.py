"""One worker process: what its calls share, its live calls, reload, and its link to the other workers."""
