"""Hydra configs (YAML only); a package so that Hydra finds them in any install."""
