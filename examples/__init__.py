"""A user's own model and data, outside the package, trained through tfscale (README, "Your own model and data")."""
