"""What every layer shares: typed errors, logs, the fixed reason sets, the bounded cache, deadlines."""
