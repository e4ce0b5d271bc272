"""Tasks: every task is next-token prediction where `targets` is -100 at unscored positions."""
