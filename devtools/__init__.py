"""Development-only tools: the local stack of emulators, the WhatsApp simulator and its fake
Graph API. Not part of the production package or image."""
