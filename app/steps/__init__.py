"""Step labels on agent trajectories: vocabulary and steps (labels.py), labelling service (service.py), JSON API
(router.py) and the rater's page (pages.py)."""
