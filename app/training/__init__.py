"""Training: the job kinds that run the trainer (reward, dpo, kto, ppo, grpo, rloo, generate, score),
creating and running those jobs, and the retraining schedule."""
