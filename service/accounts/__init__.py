"""Accounts: provider tokens, roles, and limits on failed attempts."""
