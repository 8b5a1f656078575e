"""Command-line commands; each module wraps library calls and handles only arguments and output."""
