"""The WhatsApp adapter: Graph API client (sending) and webhook parsing (receiving)."""
