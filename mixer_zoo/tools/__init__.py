"""Layer 6: the jobs (convert, publish, bench, eval, demo); library functions the CLI calls."""
