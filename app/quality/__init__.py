"""Quality: inter-rater agreement, rater reliability and flags, model leaderboards."""
