"""The encrypted archive of completed intake records: archive, read, erase, rebuild, seal,
re-encrypt."""
