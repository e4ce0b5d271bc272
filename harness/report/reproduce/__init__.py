"""`archbench-reproduce NAME`: run a paper's experiment and print our numbers beside the paper's, with its claims."""
