"""Helpers shared by the test suites: uniform cell calls (cells) and the Keras worker process."""
