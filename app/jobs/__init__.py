"""Jobs: the queue, the worker that runs them, and their pages."""
