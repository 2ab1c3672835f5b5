"""Configuration: resolve where it lives, load it (include, env, merge), validate it."""
