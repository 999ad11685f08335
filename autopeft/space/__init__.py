"""The search space: a space file bound to a model, its dimensions, and decoding a point into a Plan."""
