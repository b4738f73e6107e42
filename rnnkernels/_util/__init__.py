"""Helpers shared by every product of the package (kernels, Keras-style API,
audio application, command line, benchmarks): atomic file writes, argparse
converters, argument validators and sequence padding.  One of each; nothing
here imports the rest of the package."""
