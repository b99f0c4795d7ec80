"""Layer 0: helpers every other layer may use (tables, atomic files, error text, the machine); no project imports."""
