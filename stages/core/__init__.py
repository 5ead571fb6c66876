"""What every part shares: recipe config, errors, the stage runner and its typed state, progress,
subprocesses and file helpers, and the repository's own paths."""
