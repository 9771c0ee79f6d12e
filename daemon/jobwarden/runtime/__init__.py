"""What runs work: periodic passes (scheduler) and long-running services."""
