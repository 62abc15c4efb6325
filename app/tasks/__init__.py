"""Assignment: which comparison a rater works on next, under a lease."""
