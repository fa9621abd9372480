"""`make chaos`: the whole migration on the local stack with faults injected, and its tally."""
