"""autopeft's sampler, split as Optuna splits ``samplers/_gp``: the GP model of quality, the
acquisition function, the discrete optimiser over the grid, the initial design, the sampler."""
