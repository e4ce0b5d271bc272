"""The result record, where the two halves of the harness meet: `harness.run` writes records, `harness.report`
reads them, and neither imports the other. keys.py declares what each config key is to an experiment; results.py
writes and reads the record files."""
