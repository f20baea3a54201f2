"""Noise processes (schedules, forward sampling, loss weights, posteriors), separate from the
networks that denoise. Each works on a per-token time of shape (batch, length)."""
